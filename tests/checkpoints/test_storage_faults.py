"""Storage faults: real moto over HTTP behind a fault-injecting proxy; what is retried and what fails loudly."""

from __future__ import annotations

import errno
import hashlib
import uuid
from pathlib import Path

import botocore.exceptions
import fsspec
import pytest
from fault_proxy import FaultProxy
from s3fs import S3FileSystem
from s3fs.errors import translate_boto_error

from checkpoints.errors import CheckpointError
from checkpoints.retry import S3_CONFIG_KWARGS, S3FS_RETRIES, UPLOAD_PART_BYTES, RetryPolicy, is_transient
from checkpoints.store import CheckpointStore

DATA = r"/model\.ckpt(\?|$)"  # the object itself (and its parts), not a listing that names it
MANIFEST = r"/MANIFEST\.json$"


def _proxied_fs(proxy: FaultProxy, *, botocore_attempts: int | None = None) -> S3FileSystem:
    """s3fs pointed at the proxy; the store's own retry settings unless ``botocore_attempts`` is given."""
    config = S3_CONFIG_KWARGS if botocore_attempts is None else {"retries": {"mode": "standard", "total_max_attempts": botocore_attempts}}
    fs = S3FileSystem(client_kwargs={"endpoint_url": proxy.url}, config_kwargs=config, skip_instance_cache=True)
    fs.retries = S3FS_RETRIES
    return fs


class _Sleeps(list):
    """An injected sleep that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _policy(sleeps: _Sleeps, attempts: int = 6) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_wait_s=0.5, max_wait_s=8.0, jitter_s=0.5, sleep=sleeps)


def _data(tmp_path: Path, step: int, size: int = 4096) -> Path:
    path = tmp_path / f"data-{step}.bin"
    path.write_bytes(hashlib.sha256(str(step).encode()).digest() * (size // 32) + b"x" * (size % 32))
    return path


def _store(s3_bucket: str, proxy: FaultProxy, sleeps: _Sleeps, **kwargs) -> CheckpointStore:  # type: ignore[no-untyped-def]
    attempts = kwargs.pop("attempts", 6)
    return CheckpointStore(f"{s3_bucket}/run", fs=_proxied_fs(proxy, **kwargs), retry=_policy(sleeps, attempts))


@pytest.mark.slow
def test_slowdown_and_dropped_puts_are_retried_and_the_commit_is_sound(s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    sleeps = _Sleeps()
    store = _store(s3_bucket, fault_proxy, sleeps)
    fault_proxy.error("PUT", DATA, status=503, code="SlowDown", times=3)
    fault_proxy.drop("PUT", DATA, times=3)  # once the SlowDown spell is over: connections cut before an answer
    fault_proxy.drop("PUT", MANIFEST, times=1, forward_first=True)  # the move's copy arrived, its answer did not
    fault_proxy.error("GET", MANIFEST, status=500, code="InternalError", times=2)
    info = store.commit(_data(tmp_path, 10), step=10, epoch=0, reason="periodic")
    assert fault_proxy.count("PUT", DATA, "drop") == 3 and fault_proxy.count("PUT", DATA, "error 503") >= 1
    fault_proxy.error("GET", DATA, status=503, code="SlowDown", for_s=0.5)  # a spell of throttling on reads
    fault_proxy.truncate("GET", DATA, times=1)
    assert store.problem(info, check_sha256=True) is None
    assert [i.step for i in store.list()] == [10]
    assert sleeps and max(sleeps) <= 8.0


def test_failures_beyond_the_budget_raise_and_leave_older_checkpoints_alone(
    s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    sleeps = _Sleeps()
    store = _store(s3_bucket, fault_proxy, sleeps, attempts=3, botocore_attempts=1)
    old = store.commit(_data(tmp_path, 10), step=10, epoch=0, reason="periodic")
    fault_proxy.error("PUT", r"step-000000000020/", status=503, code="SlowDown", for_s=60)
    with pytest.raises(CheckpointError) as raised:
        store.commit(_data(tmp_path, 20), step=20, epoch=0, reason="periodic")
    message = str(raised.value)
    assert f"{s3_bucket}/run/step-000000000020/model.ckpt" in message and "upload" in message and "3 attempts" in message
    assert isinstance(raised.value.__cause__, OSError) and is_transient(raised.value.__cause__)
    assert fault_proxy.count("PUT", r"step-000000000020/model\.ckpt$") == 3 and len(sleeps) == 2, "\n".join(
        map(str, [s for s in fault_proxy.seen if "000020" in s.target])
    )
    fault_proxy.clear()
    assert [info.step for info in store.list()] == [10]
    assert store.list()[0].files == old.files and store.problem(old, check_sha256=True) is None
    assert not store.fs.exists(f"{store.root}/step-000000000020/MANIFEST.json")


def test_access_denied_is_not_retried(s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    sleeps = _Sleeps()
    store = _store(s3_bucket, fault_proxy, sleeps)  # the store's own botocore settings: 403 is final there too
    fault_proxy.error("PUT", DATA, status=403, code="AccessDenied", for_s=60)
    with pytest.raises(CheckpointError, match="upload checkpoint to s3://.*model.ckpt") as raised:
        store.commit(_data(tmp_path, 1), step=1, epoch=0, reason="periodic")
    assert isinstance(raised.value.__cause__, PermissionError)
    assert fault_proxy.count("PUT", DATA) == 1 and sleeps == []
    fault_proxy.clear()
    assert store.list() == []


def test_access_denied_on_read_is_not_a_missing_checkpoint(s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    sleeps = _Sleeps()
    store = _store(s3_bucket, fault_proxy, sleeps)
    store.commit(_data(tmp_path, 1), step=1, epoch=0, reason="periodic")
    fault_proxy.error("GET", MANIFEST, status=403, code="AccessDenied", for_s=60)
    with pytest.raises(CheckpointError, match="read s3://"):
        store.list()
    assert fault_proxy.count("GET", MANIFEST, "error 403") == 1 and sleeps == []  # tried once: not retried


@pytest.mark.slow
def test_multipart_checkpoint_through_faults_is_whole(s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    sleeps = _Sleeps()
    store = _store(s3_bucket, fault_proxy, sleeps)
    source = _data(tmp_path, 7, size=2 * UPLOAD_PART_BYTES + 123)  # three parts, uploaded concurrently
    fault_proxy.error("PUT", r"partNumber=2", status=503, code="SlowDown", times=3)
    fault_proxy.drop("PUT", r"partNumber=3", times=2)
    fault_proxy.error("POST", r"uploadId=", status=500, code="InternalError", times=1)  # completing the upload
    info = store.commit(source, step=7, epoch=0, reason="periodic")
    assert fault_proxy.count("POST", r"\?uploads") >= 1 and fault_proxy.count("PUT", r"partNumber=3") >= 3
    assert info.size_bytes == source.stat().st_size
    assert store.problem(info, check_sha256=True) is None
    assert store.download(info, tmp_path / "back").read_bytes() == source.read_bytes()


# ------------------------------------------------------------ is_transient on real exceptions


def _client_error(code: str, status: int, operation: str = "PutObject") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("503", 503),
        ("502", 502),
        ("SomethingNew", 504),
    ],
)
def test_transient_s3_codes_as_s3fs_raises_them(code: str, status: int) -> None:
    error = _client_error(code, status)
    translated = translate_boto_error(error)  # what s3fs raises: OSError(EBUSY), TimeoutError, ... with the cause
    assert translated.__cause__ is error
    assert is_transient(error) and is_transient(translated)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("403", 403),
        ("InvalidAccessKeyId", 403),
        ("ExpiredToken", 400),
        ("NoSuchKey", 404),
        ("NoSuchBucket", 404),
        ("InvalidArgument", 400),
        ("EntityTooLarge", 400),
    ],
)
def test_permanent_s3_codes_are_not_transient(code: str, status: int) -> None:
    assert not is_transient(_client_error(code, status))
    assert not is_transient(translate_boto_error(_client_error(code, status)))


def test_auth_and_missing_are_never_transient_whatever_the_cause() -> None:
    for kind in (PermissionError, FileNotFoundError):
        error = kind("nope")
        error.__cause__ = _client_error("SlowDown", 503)
        assert not is_transient(error)


def test_transport_errors_are_transient() -> None:
    import aiohttp

    errors: list[BaseException] = [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError("timed out"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        aiohttp.ServerDisconnectedError(),
        fsspec.exceptions.FSTimeoutError(),
    ]
    assert all(is_transient(error) for error in errors)


def test_local_filesystem_errors_are_not_transient(tmp_path: Path) -> None:
    for call in (lambda: open(tmp_path / "missing"), lambda: (tmp_path / "f").mkdir() or (tmp_path / "f").rmdir() or open(tmp_path)):
        with pytest.raises(OSError) as raised:
            call()
        assert not is_transient(raised.value)
    assert not is_transient(OSError(errno.EBUSY, "busy"))  # an errno alone says nothing about S3
    assert not is_transient(ValueError("bad"))


def test_policy_backs_off_exponentially_and_keeps_the_cause() -> None:
    import tenacity

    sleeps = _Sleeps()
    attempts = []

    def flaky() -> None:
        attempts.append(1)
        raise ConnectionResetError("reset")

    with pytest.raises(tenacity.RetryError) as raised:
        RetryPolicy(max_attempts=5, initial_wait_s=0.5, max_wait_s=3.0, jitter_s=0.1, sleep=sleeps).retrying()(flaky)
    assert len(attempts) == 5 and isinstance(raised.value.last_attempt.exception(), ConnectionResetError)
    assert [round(s) for s in sleeps[:2]] == [0, 1] or sleeps[0] < sleeps[1]
    assert all(0.5 <= s <= 3.0 for s in sleeps) and sleeps[-1] == 3.0
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_default_store_filesystem_has_bounded_inner_retries(moto_endpoint: str) -> None:
    store = CheckpointStore(f"s3://bucket-{uuid.uuid4().hex[:6]}/x")
    assert store.fs.retries == S3FS_RETRIES and store.fs.config_kwargs == S3_CONFIG_KWARGS
