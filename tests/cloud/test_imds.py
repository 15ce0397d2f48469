"""The IMDSv2 emulator answers like EC2, and the client reads it (and survives it failing) — over real HTTP."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from cloud.imds import (
    INSTANCE_ACTION_PATH,
    INSTANCE_ID_PATH,
    REBALANCE_PATH,
    TOKEN_HEADER,
    TOKEN_PATH,
    TOKEN_TTL_HEADER,
    MetadataClient,
    MetadataServer,
)

# 2026-11-21T15:23:45Z plus a fraction that the wire format drops.
INTERRUPT_AT = datetime(2026, 11, 21, 15, 23, 45, tzinfo=UTC).timestamp() + 0.7


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[MetadataServer]:
    with MetadataServer("i-0123456789abcdef0", clock=clock) as server:
        yield server


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one HTTP request, errors included."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method=method, headers=headers or {}), timeout=2) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def token(server: MetadataServer, ttl_s: int = 60) -> str:
    status, body, _ = request(server.url + TOKEN_PATH, "PUT", {TOKEN_TTL_HEADER: str(ttl_s)})
    assert status == 200
    return body


def get(server: MetadataServer, path: str, session_token: str) -> tuple[int, str]:
    status, body, _ = request(server.url + path, headers={TOKEN_HEADER: session_token})
    return status, body


def test_token_needs_a_ttl_header_between_1_and_21600(server: MetadataServer) -> None:
    assert request(server.url + TOKEN_PATH, "PUT")[0] == 400
    for bad in ("0", "21601", "-5", "ten"):
        assert request(server.url + TOKEN_PATH, "PUT", {TOKEN_TTL_HEADER: bad})[0] == 400, bad
    status, body, headers = request(server.url + TOKEN_PATH, "PUT", {TOKEN_TTL_HEADER: "21600"})
    assert status == 200 and len(body) >= 32
    assert headers[TOKEN_TTL_HEADER] == "21600"


def test_every_read_needs_a_valid_unexpired_token(server: MetadataServer, clock: FakeClock) -> None:
    assert request(server.url + INSTANCE_ID_PATH)[0] == 401
    assert get(server, INSTANCE_ID_PATH, "made-up")[0] == 401
    session = token(server, ttl_s=10)
    assert get(server, INSTANCE_ID_PATH, session) == (200, "i-0123456789abcdef0")
    clock.now += 10
    assert get(server, INSTANCE_ID_PATH, session)[0] == 401
    assert get(server, "/latest/meta-data/no-such-thing", token(server))[0] == 404


def test_interruption_notice_appears_when_scheduled_in_ec2_form(server: MetadataServer) -> None:
    session = token(server)
    assert get(server, INSTANCE_ACTION_PATH, session)[0] == 404
    server.schedule_interruption(INTERRUPT_AT)
    status, body = get(server, INSTANCE_ACTION_PATH, session)
    assert status == 200
    assert json.loads(body) == {"action": "terminate", "time": "2026-11-21T15:23:45Z"}


def test_rebalance_recommendation_appears_when_recommended(server: MetadataServer) -> None:
    session = token(server)
    assert get(server, REBALANCE_PATH, session)[0] == 404
    server.recommend_rebalance(INTERRUPT_AT)
    status, body = get(server, REBALANCE_PATH, session)
    assert status == 200
    assert json.loads(body) == {"noticeTime": "2026-11-21T15:23:45Z"}


def test_close_is_safe_twice_and_without_start() -> None:
    never_started = MetadataServer("i-1")
    never_started.close()
    never_started.close()
    server = MetadataServer("i-2")
    url = server.start()
    server.close()
    server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + TOKEN_PATH, timeout=1)


def test_client_reads_notice_rebalance_and_id(server: MetadataServer) -> None:
    client = MetadataClient(server.url)
    assert client.instance_id() == "i-0123456789abcdef0"
    assert client.interruption() is None and client.rebalance() is None
    server.recommend_rebalance(INTERRUPT_AT)
    server.schedule_interruption(INTERRUPT_AT)
    assert client.interruption() == datetime(2026, 11, 21, 15, 23, 45, tzinfo=UTC)
    assert client.rebalance() == datetime(2026, 11, 21, 15, 23, 45, tzinfo=UTC)


def test_client_gets_a_new_token_when_the_old_one_is_refused(server: MetadataServer, clock: FakeClock) -> None:
    client = MetadataClient(server.url, token_ttl_s=100)  # the client's own clock: it believes its token is fresh
    assert client.instance_id() is not None
    clock.now += 1000  # ... but the server has expired it
    assert client.instance_id() == "i-0123456789abcdef0"


def test_client_survives_an_unreachable_service_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    server = MetadataServer("i-3")
    url = server.start()
    server.close()
    client = MetadataClient(url, timeout_s=0.5)
    with caplog.at_level(logging.DEBUG, logger="cloud.imds"):
        assert client.interruption() is None
        assert client.interruption() is None
        assert client.rebalance() is None
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot get an IMDSv2 token" in warnings[0].getMessage()


class _GarbageHandler(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        self._reply(b"a-token")

    def do_GET(self) -> None:
        self._reply(b"<html>captive portal</html>")

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_client_warns_about_a_malformed_answer_instead_of_swallowing_it(caplog: pytest.LogCaptureFixture) -> None:
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), _GarbageHandler)
    Thread(target=garbage.serve_forever, daemon=True).start()
    try:
        client = MetadataClient(f"http://127.0.0.1:{garbage.server_address[1]}")
        with caplog.at_level(logging.WARNING, logger="cloud.imds"):
            assert client.interruption() is None
            assert client.interruption() is None
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1 and "captive portal" in warnings[0] and INSTANCE_ACTION_PATH in warnings[0]
    finally:
        garbage.shutdown()
        garbage.server_close()
