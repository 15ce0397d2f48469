"""Which storage errors are worth another try, and how long to keep trying.

A spot instance talks to object storage over a network that sometimes says "slow down" (S3
answers 503 ``SlowDown``), has a bad moment (500 ``InternalError``), or drops a connection. Those
pass if we wait a little; an auth failure or a missing object does not, and retrying it only hides
the real problem for a minute. :func:`is_transient` tells the two apart on the exception that
fsspec/s3fs actually raise, and :class:`RetryPolicy` is the bounded tenacity schedule the
checkpoint store's one door to storage uses.

Example, with the default policy: a PUT answered 503, 503, 200 waits about 0.5 s and 1 s (plus
jitter) and succeeds; a PUT answered 403 fails at once; a bucket that answers 503 for minutes
gives up after 6 attempts (about 20 s of waiting) with the last error as the cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import IncompleteRead
from typing import Any

import tenacity
from fsspec import AbstractFileSystem
from fsspec.core import split_protocol, url_to_fs
from fsspec.exceptions import FSTimeoutError
from tenacity import stop_after_attempt, stop_after_delay, wait_exponential_jitter

try:  # s3fs brings these; a store on file:// or memory:// needs neither
    from botocore.exceptions import BotoCoreError as _BotoCoreError
    from botocore.exceptions import ClientError as _BotoClientError
    from botocore.exceptions import ConnectionError as _BotoConnectionError
    from botocore.exceptions import HTTPClientError as _BotoHTTPClientError
    from botocore.exceptions import IncompleteReadError as _BotoIncompleteRead

    _BOTO_TRANSIENT: tuple[type[BaseException], ...] = (_BotoConnectionError, _BotoHTTPClientError, _BotoIncompleteRead)
    _BOTO_ERRORS: tuple[type[BaseException], ...] = (_BotoClientError, _BotoCoreError)
except ImportError:  # pragma: no cover - depends on what is installed
    _BOTO_TRANSIENT = ()
    _BOTO_ERRORS = ()
try:
    from aiohttp import ClientConnectionError as _AiohttpConnectionError
    from aiohttp import ClientPayloadError as _AiohttpPayloadError

    _AIOHTTP_TRANSIENT: tuple[type[BaseException], ...] = (_AiohttpConnectionError, _AiohttpPayloadError)
except ImportError:  # pragma: no cover
    _AIOHTTP_TRANSIENT = ()

# S3 error codes (and the names other clouds give the same thing) that mean "try again later".
TRANSIENT_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "PriorRequestNotComplete",
    }
)
# Transport failures: the request may or may not have arrived, the answer did not.
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # reset, refused, aborted, broken pipe, http.client.RemoteDisconnected
    TimeoutError,  # socket.timeout; s3fs raises it for S3's RequestTimeout
    IncompleteRead,
    FSTimeoutError,
    *_BOTO_TRANSIENT,
    *_AIOHTTP_TRANSIENT,
)
# What a storage call raises when it fails (transient or not); anything else is a bug, not storage.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, *_BOTO_ERRORS, *_AIOHTTP_TRANSIENT, *TRANSIENT_TYPES)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` from a storage call may pass if the same call is made again a little later.

    ``FileNotFoundError`` and ``PermissionError`` never are: a missing object is an answer, and
    an auth failure (403, expired token) must fail loudly rather than look like a missing file or
    a slow bucket. s3fs turns S3 error codes into built-in exceptions (``SlowDown`` and 503 become
    ``OSError(EBUSY)``, 500 ``OSError(EREMOTEIO)``, ``RequestTimeout`` ``TimeoutError``) and keeps
    botocore's ``ClientError`` as the cause, so the code is read from there: an errno alone is not
    trusted, because a local filesystem's EBUSY is not going to clear up by itself.
    """
    if isinstance(error, (FileNotFoundError, PermissionError)):
        return False
    if isinstance(error, TRANSIENT_TYPES):
        return True
    response = _client_error_response(error)
    if response is None:
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in TRANSIENT_ERROR_CODES:
        return True
    if code in {"403", "404", "AccessDenied", "NoSuchKey", "NoSuchBucket"} or status in (401, 403, 404):
        return False
    if status is None and code.isdigit():
        status = int(code)
    return isinstance(status, int) and (status >= 500 or status == 429)


def _client_error_response(error: BaseException) -> dict[str, Any] | None:
    """The parsed S3 error response of ``error`` or of the ClientError it was translated from."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return response
        current = current.__cause__
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """A bounded exponential backoff with jitter for transient storage errors.

    The ``n``-th wait is ``min(initial_wait_s * 2**n + uniform(0, jitter_s), max_wait_s)``; retrying
    stops after ``max_attempts`` attempts or once ``max_delay_s`` have passed since the first,
    whichever comes first. ``sleep`` is injectable so tests never wait for real.
    """

    max_attempts: int = 6
    max_delay_s: float = 60.0
    initial_wait_s: float = 0.5
    max_wait_s: float = 8.0
    jitter_s: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if min(self.max_delay_s, self.initial_wait_s, self.max_wait_s, self.jitter_s) < 0:
            raise ValueError("retry delays must not be negative")

    def retrying(self) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that retries what :func:`is_transient` accepts; it raises
        ``tenacity.RetryError`` (with ``last_attempt``) once the budget is spent, and any other
        error unchanged at once."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_delay_s),
            wait=wait_exponential_jitter(multiplier=self.initial_wait_s, max=self.max_wait_s, jitter=self.jitter_s),
            sleep=self.sleep,
        )


# s3fs retries some errors itself (5 tries for SlowDown and dropped connections) and botocore
# retries 5xx/throttling/connection errors under that again (legacy mode: 5 attempts): stacked
# under RetryPolicy that would be up to 150 attempts per call. A store that makes its own
# filesystem keeps one short per-request layer (botocore "standard" mode, 2 attempts in all: a lost
# multipart part is re-sent on its own rather than the whole upload), turns the s3fs layer off,
# and lets RetryPolicy be the bounded outer loop.
S3_CONFIG_KWARGS: dict[str, Any] = {"retries": {"mode": "standard", "total_max_attempts": 2}}
S3FS_RETRIES = 1

# s3fs uploads a large file as multipart parts, `max_concurrency` at a time, each read whole into
# memory (defaults: 10 x 50 MiB, i.e. 500 MiB buffered per upload, more than the state of a 100 MB
# model). spotrun uploads 8 MiB parts, as many at once as fit in half the file's size (2 to 8), so
# the upload stays parallel while its buffers stay well under the size of the state.
UPLOAD_PART_BYTES = 8 * 2**20
MAX_CONCURRENT_PARTS = 8


def upload_options(fs: AbstractFileSystem, size_bytes: int) -> dict[str, Any]:
    """Keyword arguments for ``fs.put_file`` that bound its memory while keeping parts concurrent."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if not {"s3", "s3a"} & set(protocols):
        return {}
    parts = min(MAX_CONCURRENT_PARTS, max(2, size_bytes // 2 // UPLOAD_PART_BYTES))
    return {"chunksize": UPLOAD_PART_BYTES, "max_concurrency": parts}


def filesystem_for(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and root path for ``url``, with the retry layers above set for S3."""
    protocol = split_protocol(url)[0] or "file"
    if protocol not in ("s3", "s3a"):
        fs, root = url_to_fs(url)
        return fs, root
    fs, root = url_to_fs(url, config_kwargs=S3_CONFIG_KWARGS)
    fs.retries = S3FS_RETRIES  # an s3fs attribute, not a constructor option; this cached instance is ours
    return fs, root
