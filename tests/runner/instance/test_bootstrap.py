"""`spotrun agent --from-instance-tags`: what an EC2 instance's agent learns from its tags, served by the real IMDSv2 emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.imds import MetadataServer
from cloud.provider import TAG_ATTEMPT, TAG_JOB, TAG_KEY, TAG_NODE, TAG_RENDEZVOUS, TAG_SPEC, TAG_URL, Rendezvous
from runner.errors import SpecError
from runner.instance.bootstrap import AgentOptions, agent_settings
from runner.instance.protocol import LaunchCredentials

LAUNCH_TAGS = {
    TAG_URL: "s3://bucket/job",
    TAG_ATTEMPT: "3",
    TAG_NODE: "1",
    TAG_RENDEZVOUS: "10.0.0.7:29500",
    TAG_JOB: "job",
    TAG_SPEC: "ab" * 32,
    TAG_KEY: "cd" * 32,
}


@pytest.fixture
def serve_tags() -> Iterator[list[MetadataServer]]:
    servers: list[MetadataServer] = []
    yield servers
    for server in servers:
        server.close()


def _options(endpoint: str, *, from_instance_tags: bool = True) -> AgentOptions:
    return AgentOptions(
        checkpoint_url=None,
        attempt=None,
        node=0,
        rendezvous=None,
        from_instance_tags=from_instance_tags,
        metadata_endpoint=endpoint,
        poll_interval_s=5.0,
        heartbeat_interval_s=5.0,
    )


def _endpoint(servers: list[MetadataServer], tags: dict[str, str]) -> str:
    server = MetadataServer("i-0123456789abcdef0", tags=tags)
    servers.append(server)
    return server.start()


def test_the_launch_is_read_from_the_instance_tags(serve_tags: list[MetadataServer]) -> None:
    endpoint = _endpoint(serve_tags, LAUNCH_TAGS)

    settings = agent_settings(_options(endpoint), environ={})

    assert (settings.checkpoint_url, settings.attempt, settings.node, settings.rendezvous) == (
        "s3://bucket/job",
        3,
        1,
        Rendezvous("10.0.0.7", 29500),
    )
    assert settings.credentials == LaunchCredentials(job="job", spec_sha256="ab" * 32, key="cd" * 32)
    assert settings.metadata_endpoint == endpoint


def test_an_instance_without_usable_tags_is_one_line_saying_what_is_missing(serve_tags: list[MetadataServer]) -> None:
    endpoint = _endpoint(serve_tags, {TAG_URL: "s3://bucket/job", TAG_ATTEMPT: "third"})

    with pytest.raises(SpecError, match=rf"no usable {TAG_URL}/{TAG_ATTEMPT} tags \(got 's3://bucket/job', 'third'\)"):
        agent_settings(_options(endpoint), environ={})


def test_without_tags_the_options_must_name_the_job() -> None:
    with pytest.raises(SpecError, match="give --checkpoint-url and --attempt, or --from-instance-tags"):
        agent_settings(_options("http://127.0.0.1:9", from_instance_tags=False), environ={})
