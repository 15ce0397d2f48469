"""The EC2 instance metadata service (IMDSv2): an emulator for local instances and tests, and a client.

The agent learns that its spot instance is about to be taken away only through this service, so
the emulator answers exactly as EC2 does (token handshake, paths, status codes, JSON bodies) and
the same agent code runs unchanged on EC2 and on this machine. The emulator knows nothing about
local instances: the AWS test fixtures serve their notices with it too.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloud.provider import LOOPBACK

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
TAGS_PATH = "/latest/meta-data/tags/instance/"  # + key; served when the instance allows tags in its metadata
MAX_TOKEN_TTL_S = 21600  # EC2's limit: six hours


def _format_time(unix_s: float) -> str:
    """EC2's timestamp form, ``2026-11-21T15:23:45Z``; truncated, so a deadline is never announced late."""
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Metadata:
    """What the emulator serves; shared by its request threads, hence the lock."""

    def __init__(self, instance_id: str, clock: Callable[[], float], tags: dict[str, str]) -> None:
        self.instance_id = instance_id
        self.clock = clock
        self.tags = dict(tags)
        self.lock = threading.Lock()
        self.token_expiry: dict[str, float] = {}
        self.instance_action: str | None = None
        self.rebalance: str | None = None

    def issue_token(self, ttl_s: int) -> str:
        """A new opaque session token, valid for ``ttl_s`` seconds."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.lock:
            # Expired tokens are dropped here so a long-lived instance does not accumulate them.
            self.token_expiry = {t: expiry for t, expiry in self.token_expiry.items() if expiry > now}
            self.token_expiry[token] = now + ttl_s
        return token

    def token_valid(self, token: str | None) -> bool:
        """Whether ``token`` was issued here and has not expired: IMDSv2 refuses every read otherwise."""
        with self.lock:
            expiry = self.token_expiry.get(token) if token else None
        return expiry is not None and expiry > self.clock()

    def document(self, path: str) -> str | None:
        """The body served at ``path``, or None for 404 (unknown path, or nothing announced yet)."""
        with self.lock:
            if path.startswith(TAGS_PATH):
                return self.tags.get(path.removeprefix(TAGS_PATH))
            return {
                INSTANCE_ID_PATH: self.instance_id,
                INSTANCE_ACTION_PATH: self.instance_action,
                REBALANCE_PATH: self.rebalance,
            }.get(path)


class _Handler(BaseHTTPRequestHandler):
    """One request, answered the way EC2's IMDSv2 answers it."""

    server: _Server

    def do_PUT(self) -> None:  # the name http.server dispatches to
        """Only the token request is a PUT; its TTL header is mandatory, as on EC2."""
        if self.path != TOKEN_PATH:
            self._reply(HTTPStatus.NOT_FOUND, "Not Found")
            return
        ttl = self.headers.get(TOKEN_TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL_S:
            self._reply(HTTPStatus.BAD_REQUEST, "Bad Request")
            return
        token = self.server.metadata.issue_token(int(ttl))
        self._reply(HTTPStatus.OK, token, {TOKEN_TTL_HEADER: ttl})

    def do_GET(self) -> None:  # the name http.server dispatches to
        """Every read needs a valid token (IMDSv2 only; v1's tokenless reads get 401)."""
        metadata = self.server.metadata
        if not metadata.token_valid(self.headers.get(TOKEN_HEADER)):
            self._reply(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            return
        body = metadata.document(self.path)
        if body is None:
            self._reply(HTTPStatus.NOT_FOUND, "Not Found")
        else:
            self._reply(HTTPStatus.OK, body)

    def _reply(self, status: HTTPStatus, body: str, headers: dict[str, str] | None = None) -> None:
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # the base class's name
        """Access lines go to debug logging instead of stderr."""
        # The agent polls every second or so: one line per request would drown the host's log.
        log.debug("imds %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, metadata: _Metadata) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.metadata = metadata


class MetadataServer:
    """An IMDSv2 endpoint for one instance on 127.0.0.1, served from a daemon thread."""

    def __init__(self, instance_id: str, *, clock: Callable[[], float] = time.monotonic, tags: dict[str, str] | None = None) -> None:
        """``clock`` times token expiry only; notices carry the wall-clock times they are given; ``tags`` are the instance's."""
        self._metadata = _Metadata(instance_id, clock, tags or {})
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> str:
        """Start serving on a free port; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None or self._closed:
            raise RuntimeError("a MetadataServer can be started only once")
        self._server = _Server(self._metadata)
        # The poll interval bounds how long close() waits for the serving loop (0.5 s by default).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="imds", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("the MetadataServer is not started")
        return f"http://{LOOPBACK}:{self._server.server_port}"

    def schedule_interruption(self, at_unix_s: float) -> None:
        """Serve the spot interruption notice from now on: the instance terminates at ``at_unix_s``."""
        action = json.dumps({"action": "terminate", "time": _format_time(at_unix_s)})
        with self._metadata.lock:
            self._metadata.instance_action = action
        log.debug("imds: interruption notice served (terminate at %s)", _format_time(at_unix_s))

    def recommend_rebalance(self, at_unix_s: float) -> None:
        """Serve a rebalance recommendation from now on, issued (``noticeTime``) at ``at_unix_s``."""
        recommendation = json.dumps({"noticeTime": _format_time(at_unix_s)})
        with self._metadata.lock:
            self._metadata.rebalance = recommendation
        log.debug("imds: rebalance recommendation served")

    def close(self) -> None:
        """Stop serving and free the port; safe to call twice, or without ``start``."""
        self._closed = True
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        assert self._thread is not None
        self._thread.join()

    def __enter__(self) -> MetadataServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MetadataClient:
    """Reads the interruption notice and rebalance recommendation over IMDSv2, never crashing the agent.

    Connection trouble answers None, because the agent must keep training through a metadata
    hiccup; each run of failures is logged once as a warning (and its end at info), so a
    service that stays broken, or answers garbage, is visible in the agent's log without
    flooding it at one line per poll.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 1.0,
        token_ttl_s: int = MAX_TOKEN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``endpoint`` is the base URL: ``http://169.254.169.254`` on EC2."""
        if not 1 <= token_ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"token_ttl_s must be between 1 and {MAX_TOKEN_TTL_S}, got {token_ttl_s}")
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.token_ttl_s = token_ttl_s
        self._clock = clock
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._failing: set[str] = set()
        # IMDS is link-local: a proxy from the environment must never see these requests.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def interruption(self) -> datetime | None:
        """When the spot instance will be taken away (UTC), or None when no notice is served."""
        return self._timestamp(INSTANCE_ACTION_PATH, "time")

    def rebalance(self) -> datetime | None:
        """When EC2 recommended a rebalance (UTC), or None when it has not."""
        return self._timestamp(REBALANCE_PATH, "noticeTime")

    def instance_id(self) -> str | None:
        """This instance's id, or None when the service cannot be reached."""
        return self._get(INSTANCE_ID_PATH)

    def tag(self, key: str) -> str | None:
        """One of this instance's tags (the launch template must allow tags in metadata), or None."""
        return self._get(TAGS_PATH + key)

    def _timestamp(self, path: str, key: str) -> datetime | None:
        body = self._get(path)
        if body is None:
            return None
        try:
            value = datetime.fromisoformat(json.loads(body)[key])
        except (ValueError, KeyError, TypeError) as error:
            self._failed(f"malformed {path}", f"unexpected answer from {self.endpoint}{path}: {body[:200]!r} ({error})")
            return None
        self._recovered(f"malformed {path}")
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def _get(self, path: str) -> str | None:
        """The body at ``path``; None on 404 (nothing to say) and on any failure (logged)."""
        for attempt in range(2):
            token = self._valid_token()
            if token is None:
                return None
            try:
                body = self._request("GET", path, {TOKEN_HEADER: token})
            except urllib.error.HTTPError as error:
                if error.code == HTTPStatus.NOT_FOUND:
                    self._recovered("unavailable")
                    return None
                if error.code == HTTPStatus.UNAUTHORIZED and attempt == 0:
                    self._token = None  # the service restarted or forgot us: one retry with a new token
                    continue
                self._failed("unavailable", f"{self.endpoint}{path} answered HTTP {error.code}")
                return None
            except (OSError, http.client.HTTPException) as error:
                self._failed("unavailable", f"cannot reach the instance metadata service at {self.endpoint}: {error}")
                return None
            self._recovered("unavailable")
            return body
        return None

    def _valid_token(self) -> str | None:
        # Renewed early so a token never expires between this check and the request.
        margin_s = min(60.0, self.token_ttl_s / 2)
        if self._token is not None and self._clock() < self._token_expires_at - margin_s:
            return self._token
        requested_at = self._clock()
        try:
            self._token = self._request("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(self.token_ttl_s)})
        except (OSError, http.client.HTTPException) as error:
            self._failed("unavailable", f"cannot get an IMDSv2 token from {self.endpoint}: {error}")
            return None
        self._token_expires_at = requested_at + self.token_ttl_s
        return self._token

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str:
        request = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        with self._opener.open(request, timeout=self.timeout_s) as response:
            body: bytes = response.read()
            return body.decode()

    def _failed(self, kind: str, message: str) -> None:
        if kind in self._failing:
            log.debug("%s", message)
            return
        self._failing.add(kind)
        log.warning("%s (further failures of this kind are logged at debug level until it recovers)", message)

    def _recovered(self, kind: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            log.info("instance metadata service: %s resolved", kind)
