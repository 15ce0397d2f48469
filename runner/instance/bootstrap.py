"""How `spotrun agent` starts on an instance: which job, attempt and rank it runs, from its options or from its instance's tags.

A local instance gets all of it on its command line and its launch credentials in its
environment. An EC2 instance boots from a launch template shared by every job, so the same
command line starts every agent there (``--from-instance-tags``), and what differs (the job's
checkpoint URL, the attempt, the rank and rendezvous in a gang, the launch credentials) is read
from the tags the controller launched it with, through the instance metadata service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloud.imds import MetadataClient
from cloud.provider import RENDEZVOUS_ENV, TAG_ATTEMPT, TAG_JOB, TAG_KEY, TAG_NODE, TAG_RENDEZVOUS, TAG_SPEC, TAG_URL, Rendezvous
from runner.errors import SpecError
from runner.instance.agent import Agent, AgentSettings, refuse
from runner.instance.protocol import LaunchCredentials, SpecTamperedError


@dataclass(frozen=True)
class AgentOptions:
    """What `spotrun agent` was given: the job named on its command line, or ``from_instance_tags``, and its timing."""

    checkpoint_url: str | None
    attempt: int | None
    node: int
    rendezvous: str | None
    from_instance_tags: bool
    metadata_endpoint: str
    poll_interval_s: float
    heartbeat_interval_s: float


def agent_settings(options: AgentOptions, environ: Mapping[str, str]) -> AgentSettings:
    """The agent's settings from its instance's tags, or from its options and the launch credentials in ``environ``."""
    launch = _from_instance_tags(options.metadata_endpoint) if options.from_instance_tags else _from_options(options, environ)
    return AgentSettings(
        checkpoint_url=launch.checkpoint_url,
        attempt=launch.attempt,
        node=launch.node,
        rendezvous=launch.rendezvous,
        credentials=launch.credentials,
        metadata_endpoint=options.metadata_endpoint,
        poll_interval_s=options.poll_interval_s,
        heartbeat_interval_s=options.heartbeat_interval_s,
    )


def run_agent(settings: AgentSettings) -> int:
    """Run the agent to its end and return its exit code; a spec that is not the launch's runs nothing and is reported."""
    try:
        running = Agent(settings)
    except SpecTamperedError as error:
        return refuse(settings, error)
    return running.run()


@dataclass(frozen=True)
class _Launch:
    """Which job and attempt this instance runs, its place in a gang, and the credentials its launch carries."""

    checkpoint_url: str
    attempt: int
    node: int
    rendezvous: Rendezvous | None
    credentials: LaunchCredentials | None  # None: launched by a spotrun before digests and keys


def _from_options(options: AgentOptions, environ: Mapping[str, str]) -> _Launch:
    """The launch named on the command line (local instances), its credentials in the environment."""
    if options.checkpoint_url is None or options.attempt is None:
        raise SpecError("agent: give --checkpoint-url and --attempt, or --from-instance-tags on an instance spotrun launched")
    return _Launch(
        checkpoint_url=options.checkpoint_url,
        attempt=options.attempt,
        node=options.node,
        rendezvous=_rendezvous(options.rendezvous, f"--rendezvous ({RENDEZVOUS_ENV})"),
        credentials=LaunchCredentials.from_env(environ),
    )


def _from_instance_tags(metadata_endpoint: str) -> _Launch:
    """The job's URL and attempt, the instance's rank and rendezvous in a gang, and its launch credentials, from its tags."""
    metadata = MetadataClient(metadata_endpoint)
    url, attempt = metadata.tag(TAG_URL), metadata.tag(TAG_ATTEMPT)
    if url is None or attempt is None or not attempt.isdigit():
        raise SpecError(
            f"agent: this instance's metadata at {metadata_endpoint} has no usable {TAG_URL}/{TAG_ATTEMPT} tags "
            f"(got {url!r}, {attempt!r}); was it launched by spotrun from a template that allows tags in metadata?"
        )
    node = metadata.tag(TAG_NODE) or "0"
    if not node.isdigit():
        raise SpecError(f"agent: this instance's {TAG_NODE} tag is {node!r}; expected a rank such as 0 or 1")
    job, digest = metadata.tag(TAG_JOB), metadata.tag(TAG_SPEC)
    credentials = LaunchCredentials(job=job, spec_sha256=digest, key=metadata.tag(TAG_KEY)) if job and digest else None
    rendezvous = _rendezvous(metadata.tag(TAG_RENDEZVOUS), f"this instance's {TAG_RENDEZVOUS} tag")
    return _Launch(checkpoint_url=url, attempt=int(attempt), node=int(node), rendezvous=rendezvous, credentials=credentials)


def _rendezvous(text: str | None, source: str) -> Rendezvous | None:
    """A gang's rendezvous as the launch gave it (None for a single instance), or a SpecError naming where it came from."""
    if text is None:
        return None
    try:
        return Rendezvous.parse(text)
    except ValueError as error:
        raise SpecError(f"agent: {source}: {error}") from None
