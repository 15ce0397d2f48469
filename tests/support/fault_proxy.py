"""A fault-injecting HTTP proxy in front of the moto server, for storage and EC2 fault tests.

The proxy forwards every request to moto unchanged, unless a rule matches it (method + a regex on
the path and query, and optionally one on the request body, where EC2 puts its ``Action``); a
rule answers an S3 or EC2 error, drops the connection, truncates the answer, or rewrites moto's
answer (e.g. spot prices moto cannot produce), for its next N matches or for T seconds. Every
request is recorded with what the proxy did to it, so tests can count calls.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_ERROR_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "AccessDenied": "Access Denied",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}


@dataclass
class Rule:
    """What to do to requests that match ``method`` and ``path`` (a regex searched in path?query)."""

    method: str
    path: str
    action: str  # "error", "drop" (no answer), "truncate" (half of moto's body, then close), "rewrite"
    status: int = 503
    code: str = "SlowDown"
    body: str | None = None  # regex searched in the request body
    ec2: bool = False  # answer errors in EC2's XML form
    rewrite: Callable[[bytes], bytes] | None = None
    times: int | None = None  # matches left; None: until ``until``
    until: float | None = None  # time.monotonic() after which the rule is spent
    forward_first: bool = False  # "drop": let moto do the request, then lose the answer

    def matches(self, method: str, target: str, body: str) -> bool:
        return (
            self.method in ("*", method)
            and re.search(self.path, target) is not None
            and (self.body is None or re.search(self.body, body) is not None)
        )

    def spent(self) -> bool:
        return (self.times is not None and self.times <= 0) or (self.until is not None and time.monotonic() > self.until)


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it."""

    method: str
    target: str
    outcome: str  # "forwarded", "error 503", "drop", "truncate", "rewrite"
    body: str = ""  # the request body when it is a form (EC2), else empty


class FaultProxy:
    """Tell it what to break with :meth:`error`, :meth:`drop` and :meth:`truncate`; read :attr:`seen`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def error(
        self, method: str, path: str, *, status: int = 503, code: str = "SlowDown", times: int | None = None, for_s: float | None = None
    ) -> None:
        """Answer matching requests with an S3 XML error, for the next ``times`` or for ``for_s`` seconds."""
        self._add(Rule(method, path, "error", status=status, code=code), times, for_s)

    def drop(self, method: str, path: str, *, times: int | None = None, for_s: float | None = None, forward_first: bool = False) -> None:
        """Close the connection without an answer (after moto did the request, if ``forward_first``)."""
        self._add(Rule(method, path, "drop", forward_first=forward_first), times, for_s)

    def truncate(self, method: str, path: str, *, times: int | None = None, for_s: float | None = None) -> None:
        """Send moto's status and headers but only half of its body, then close the connection."""
        self._add(Rule(method, path, "truncate"), times, for_s)

    def ec2_error(
        self, action: str, code: str, *, status: int = 400, when: str | None = None, times: int | None = None, for_s: float | None = None
    ) -> None:
        """Answer EC2 ``action`` calls (whose body also matches ``when``) with an EC2 error ``code``."""
        body = f"Action={action}(&|$)" if when is None else f"(?=.*Action={action}(&|$))(?=.*{when})"
        self._add(Rule("POST", ".", "error", status=status, code=code, body=body, ec2=True), times, for_s)

    def ec2_drop_answer(self, action: str, *, times: int, when: str | None = None) -> None:
        """Let moto do EC2 ``action`` (whose body also matches ``when``), then lose its answer (a response lost on the way back)."""
        body = f"Action={action}(&|$)" if when is None else f"(?=.*Action={action}(&|$))(?=.*{when})"
        self._add(Rule("POST", ".", "drop", body=body, forward_first=True), times, None)

    def ec2_rewrite(self, action: str, rewrite: Callable[[bytes], bytes], *, for_s: float) -> None:
        """Pass EC2 ``action`` to moto and answer with ``rewrite(moto's body)``."""
        self._add(Rule("POST", ".", "rewrite", body=f"Action={action}(&|$)", rewrite=rewrite), None, for_s)

    def _add(self, rule: Rule, times: int | None, for_s: float | None) -> None:
        if (times is None) == (for_s is None):
            raise ValueError("give exactly one of times= and for_s=")
        rule.times = times
        rule.until = None if for_s is None else time.monotonic() + for_s
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Forget all rules and everything seen."""
        with self._lock:
            self._rules.clear()
            self._seen.clear()

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self, method: str, path: str, outcome: str | None = None) -> int:
        """How many requests matching ``method``/``path`` (and ``outcome``) the proxy saw."""
        return sum(1 for s in self.seen if s.method == method and re.search(path, s.target) and outcome in (None, s.outcome))

    def count_ec2(self, action: str) -> int:
        """How many EC2 ``action`` calls the proxy saw."""
        return sum(1 for s in self.seen if re.search(f"Action={action}(&|$)", s.body))

    def _decide(self, method: str, target: str, body: str) -> Rule | None:
        with self._lock:
            self._rules[:] = [rule for rule in self._rules if not rule.spent()]
            for rule in self._rules:
                if rule.matches(method, target, body):
                    if rule.times is not None:
                        rule.times -= 1
                    outcome = f"error {rule.status}" if rule.action == "error" else rule.action
                    self._seen.append(Seen(method, target, outcome, body))
                    return rule
            self._seen.append(Seen(method, target, "forwarded", body))
            return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raw = bytearray()
                while True:
                    line = self.rfile.readline()
                    raw += line
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while True:  # trailers, then the empty line
                            trailer = self.rfile.readline()
                            raw += trailer
                            if trailer in (b"\r\n", b"\n", b""):
                                return bytes(raw)
                    raw += self.rfile.read(size + 2)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            connection = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                chunked = False
                for name, value in self.headers.items():
                    if name.lower() == "transfer-encoding" and value.lower() == "chunked":
                        chunked = True
                    if name.lower() in _HOP_BY_HOP - {"transfer-encoding"} or name.lower() == "expect":
                        continue
                    connection.putheader(name, value)
                connection.endheaders()
                if body or chunked:
                    connection.send(body)
                response = connection.getresponse()
                payload = response.read()
                return response.status, response.reason, response.getheaders(), payload
            finally:
                connection.close()

        def _handle(self) -> None:
            body = self._body()
            form = body.decode("utf-8", "replace") if "x-www-form-urlencoded" in self.headers.get("Content-Type", "") else ""
            rule = proxy._decide(self.command, self.path, form)
            if rule is None:
                self._answer(*self._forward(body))
            elif rule.action == "error":
                self._error(rule.status, rule.code, ec2=rule.ec2)
            elif rule.action == "rewrite":
                assert rule.rewrite is not None
                status, reason, headers, payload = self._forward(body)
                self._answer(status, reason, headers, rule.rewrite(payload))
            elif rule.action == "drop":
                if rule.forward_first:
                    self._forward(body)
                self._hang_up()
            else:  # truncate
                status, reason, headers, payload = self._forward(body)
                self._answer(status, reason, headers, payload[: len(payload) // 2], declared=len(payload))
                self._hang_up()

        def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes, declared: int | None = None) -> None:
            self.send_response_only(status, reason)
            for name, value in headers:
                if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                    continue
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload) if declared is None else declared))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(self, status: int, code: str, *, ec2: bool = False) -> None:
            message = _ERROR_MESSAGES.get(code, code)
            if ec2:
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                    "<RequestID>fault-proxy</RequestID></Response>"
                ).encode()
            else:
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    "<RequestId>fault-proxy</RequestId></Error>"
                ).encode()
            self._answer(status, http.HTTPStatus(status).phrase, [("Content-Type", "application/xml")], payload)

        def _hang_up(self) -> None:
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
