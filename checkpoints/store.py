"""Committed checkpoints on any fsspec URL.

Layout under the checkpoint URL::

    step-000000001200/model.ckpt       a standard Lightning checkpoint
    step-000000001200/MANIFEST.json    written last: its presence is the commit
    _spotrun/...                       heartbeats and logs, never read as checkpoints

The manifest lists every object with its size and sha256, so discovery can tell a complete
checkpoint from one that was cut off, damaged or half deleted, and fall back to the previous one.

Every call that talks to storage passes one door, :meth:`CheckpointStore._io`: transient errors
(throttling, 5xx, dropped connections) are retried under a bounded :class:`RetryPolicy`, and what
still fails becomes a ``CheckpointError`` naming the URL, the operation and the last error.
Retrying never commits a half-written object: each retried unit is idempotent (a whole upload,
a whole temporary-write-then-move), and the manifest is written only after the data's size was
read back and matched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from fsspec import AbstractFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from checkpoints.errors import CheckpointError
from checkpoints.retry import STORAGE_ERRORS, RetryPolicy, filesystem_for, upload_options

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
DATA_NAME = "model.ckpt"
SPOTRUN_DIR = "_spotrun"
_CHECKPOINT_DIR = re.compile(r"^step-(\d{12})$")
_HASH_CHUNK_BYTES = 8 * 1024 * 1024
_T = TypeVar("_T")


def checkpoint_dir_name(step: int) -> str:
    """The one place checkpoint directory names are made: sortable by step."""
    return f"step-{step:012d}"


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One object of a checkpoint as the manifest recorded it."""

    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint: what its manifest says, and where it lives."""

    url: str
    step: int
    epoch: int
    time: float
    reason: str
    final: bool
    files: dict[str, FileEntry] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Total bytes of the checkpoint's objects."""
        return sum(entry.size_bytes for entry in self.files.values())

    @property
    def data_url(self) -> str:
        """URL of the Lightning checkpoint file inside this checkpoint."""
        return f"{self.url}/{DATA_NAME}"

    def to_json(self) -> dict[str, Any]:
        """Plain dict for ``--json`` output."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "time": self.time,
            "size_bytes": self.size_bytes,
            "url": self.url,
            "reason": self.reason,
            "final": self.final,
            "metrics": self.metrics,
        }


class CheckpointStore:
    """Writes, discovers, verifies and prunes the checkpoints under one URL.

    ``fs`` is used as given; without it the store makes one from the URL with
    :func:`~checkpoints.retry.filesystem_for` (fewer retries inside s3fs/botocore, so
    ``retry`` bounds the total). ``retry`` is the policy for transient storage errors.
    """

    def __init__(self, url: str, fs: AbstractFileSystem | None = None, *, retry: RetryPolicy | None = None) -> None:
        if fs is None:
            fs, root = filesystem_for(url)
        else:
            root = fs._strip_protocol(url)
        self.fs: AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()

    def _io(self, operation: str, path: str, call: Callable[[], _T]) -> _T:
        """The one door to storage: ``call()``, with transient errors retried under ``self.retry``.

        ``FileNotFoundError`` passes through unchanged (a missing object is an answer callers
        handle); any other storage error, and a transient one that outlasts the retries, becomes
        a ``CheckpointError`` naming the URL, the operation and the last error (kept as the cause).
        ``call`` must be safe to repeat: a retry runs all of it again.
        """
        try:
            return self.retry.retrying()(call)
        except tenacity.RetryError as gave_up:
            error = gave_up.last_attempt.exception()
            raise CheckpointError(
                f"could not {operation} {self._url(path)}: still failing after "
                f"{gave_up.last_attempt.attempt_number} attempts, last error: {error!r}"
            ) from error
        except FileNotFoundError:
            raise
        except STORAGE_ERRORS as error:
            raise CheckpointError(f"could not {operation} {self._url(path)}: {error!r}") from error

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _url(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def spotrun_path(self, name: str) -> str:
        """Path of a spotrun bookkeeping object (heartbeat, logs) next to the checkpoints."""
        return self._path(SPOTRUN_DIR, name)

    def commit(
        self,
        data_file: Path,
        *,
        step: int,
        epoch: int,
        reason: str,
        final: bool = False,
        metrics: dict[str, float] | None = None,
        spotrun_version: str = "",
        upload_callback: Callback = DEFAULT_CALLBACK,
    ) -> CheckpointInfo:
        """Upload ``data_file`` as the checkpoint of ``step``, then write its manifest (the commit).

        A step that is already committed is left as it is (the same step holds the same state);
        leftovers of an interrupted save of the same step are replaced. ``upload_callback`` hears
        the upload's progress; an exception it raises ends the upload and leaves nothing committed.
        """
        directory = self._path(checkpoint_dir_name(step))
        existing = self._read_manifest(directory)
        if existing is not None:
            return existing
        entry = FileEntry(size_bytes=data_file.stat().st_size, sha256=sha256_of_file(data_file))
        data_path = f"{directory}/{DATA_NAME}"
        try:
            self._io("create", directory, lambda: self.fs.makedirs(directory, exist_ok=True))
            self._io(
                "upload checkpoint to",
                data_path,
                lambda: self.fs.put_file(str(data_file), data_path, callback=upload_callback, **upload_options(self.fs, entry.size_bytes)),
            )
            remote_size = self._io("read the size of", data_path, lambda: self.fs.size(data_path))
        except FileNotFoundError as error:  # the bucket or the local file went away
            raise CheckpointError(f"could not upload checkpoint of step {step} to {self._url(data_path)}: {error!r}") from error
        if remote_size != entry.size_bytes:
            raise CheckpointError(
                f"checkpoint of step {step} at {self._url(data_path)} has {remote_size} bytes after upload, "
                f"expected {entry.size_bytes}; not committing it"
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "spotrun_version": spotrun_version,
            "step": step,
            "epoch": epoch,
            "time": time.time(),
            "reason": reason,
            "final": final,
            "metrics": metrics or {},
            "files": {DATA_NAME: {"size_bytes": entry.size_bytes, "sha256": entry.sha256}},
        }
        self._write_atomically(f"{directory}/{MANIFEST_NAME}", json.dumps(manifest, indent=1).encode())
        info = _info_from_manifest(self._url(directory), manifest)
        log.info("committed checkpoint step %d (%s, %d bytes) at %s", step, reason, entry.size_bytes, info.url)
        return info

    def _write_atomically(self, path: str, payload: bytes) -> None:
        """Write to a temporary name, then move: readers see the whole object or nothing.

        Write and move are retried together: a move whose answer was lost may already have
        removed the temporary object, and writing it again makes the retry whole.
        """
        temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"

        def write_then_move() -> None:
            self.fs.pipe_file(temporary, payload)
            self.fs.mv(temporary, path)

        try:
            self._io("create", path, lambda: self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True))
            self._io("write", path, write_then_move)
        except FileNotFoundError as error:
            raise CheckpointError(f"could not write {self._url(path)}: {error!r}") from error

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        """Atomically write a bookkeeping JSON object under ``_spotrun/``."""
        self.write_bytes(name, json.dumps(payload).encode())

    def write_bytes(self, name: str, payload: bytes) -> None:
        """Atomically write a bookkeeping object (a log, say) under ``_spotrun/``."""
        self._write_atomically(self.spotrun_path(name), payload)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A bookkeeping JSON object under ``_spotrun/``, or None when absent or unreadable."""
        try:
            path = self.spotrun_path(name)
            return json.loads(self._io("read", path, lambda: self.fs.cat_file(path)))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            log.warning("ignoring unreadable %s: %s", self._url(self.spotrun_path(name)), error)
            return None

    def _read_manifest(self, directory: str) -> CheckpointInfo | None:
        try:
            path = f"{directory}/{MANIFEST_NAME}"
            manifest = json.loads(self._io("read", path, lambda: self.fs.cat_file(path)))
            return _info_from_manifest(self._url(directory), manifest)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            log.warning("ignoring checkpoint with an unreadable manifest at %s: %s", self._url(directory), error)
            return None

    def _step_directories(self) -> list[tuple[int, str]]:
        try:
            entries = self._io("list", self.root, lambda: self.fs.ls(self.root, detail=False))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            match = _CHECKPOINT_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match:
                found.append((int(match.group(1)), entry.rstrip("/")))
        return sorted(found, reverse=True)

    def list(self) -> list[CheckpointInfo]:
        """Committed checkpoints (manifest present and readable), newest first; contents not verified."""
        infos = (self._read_manifest(directory) for _, directory in self._step_directories())
        return [info for info in infos if info is not None]

    def problem(self, info: CheckpointInfo, *, check_sha256: bool) -> str | None:
        """Why ``info`` cannot be used (missing or wrong-sized object, sha256 mismatch), or None if it is sound."""
        directory = self.fs._strip_protocol(info.url)
        for name, entry in info.files.items():
            path = f"{directory}/{name}"
            try:
                size = self._io("read the size of", path, lambda path=path: self.fs.size(path))
                if size != entry.size_bytes:
                    return f"{name} has {size} bytes, manifest says {entry.size_bytes}"
                if check_sha256 and self._io("hash", path, lambda path=path: self._sha256_of_object(path)) != entry.sha256:
                    return f"{name} does not match its sha256"
            except FileNotFoundError:
                return f"{name} is missing"
        return None

    def _sha256_of_object(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()

    def latest(self, *, check_sha256: bool = False) -> CheckpointInfo | None:
        """The newest committed checkpoint whose objects match the manifest; warns about each one skipped."""
        for info in self.list():
            problem = self.problem(info, check_sha256=check_sha256)
            if problem is None:
                return info
            log.warning("skipping damaged checkpoint %s: %s; falling back to the previous one", info.url, problem)
        return None

    def download(self, info: CheckpointInfo, directory: Path) -> Path:
        """Copy the checkpoint's data file into ``directory`` and check it against the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        local = directory / f"{checkpoint_dir_name(info.step)}.ckpt"
        remote = f"{self.fs._strip_protocol(info.url)}/{DATA_NAME}"
        try:
            self._io("download", remote, lambda: self.fs.get_file(remote, str(local)))
        except FileNotFoundError as error:
            raise CheckpointError(f"checkpoint {info.url} has no {DATA_NAME} any more") from error
        expected = info.files[DATA_NAME]
        if local.stat().st_size != expected.size_bytes or sha256_of_file(local) != expected.sha256:
            local.unlink()
            raise CheckpointError(f"checkpoint {info.url} changed or was damaged while it was being downloaded")
        return local

    def prune(self, keep: int, *, keep_every: int | None = None, protect: frozenset[str] = frozenset()) -> list[str]:
        """Delete committed checkpoints beyond the newest ``keep`` and stale partial ones; returns what was deleted.

        With ``keep_every`` (steps), the first checkpoint at or after each of its multiples
        (keep_every, 2 x keep_every, ...) is kept too, for looking back (e.g. keep_every=1000 with checkpoints at 990, 1010, 1500, 2005:
        1010 and 2005 stay). Never deletes the newest committed checkpoint nor any URL in
        ``protect`` (the one a run resumed from). The manifest goes first, so a deletion cut short
        leaves an uncommitted directory, never a committed one with missing data.
        """
        directories = self._step_directories()
        committed = [(step, directory) for step, directory in directories if self._read_manifest(directory)]
        if not committed:
            return []
        newest_step = committed[0][0]
        keep_urls = {self._url(directory) for _, directory in committed[: max(keep, 1)]} | set(protect)
        if keep_every:
            first_of_interval: dict[int, str] = {}
            for step, directory in reversed(committed):  # oldest first
                first_of_interval.setdefault(step // keep_every, directory)
            keep_urls |= {self._url(directory) for interval, directory in first_of_interval.items() if interval > 0}
        deleted = []
        committed_dirs = {directory for _, directory in committed}
        for step, directory in directories:
            url = self._url(directory)
            stale_partial = directory not in committed_dirs and step < newest_step
            if url in keep_urls or (directory not in committed_dirs and not stale_partial):
                continue
            try:
                if directory in committed_dirs:
                    manifest = f"{directory}/{MANIFEST_NAME}"
                    self._io("delete", manifest, lambda manifest=manifest: self.fs.rm_file(manifest))
                self._io("delete", directory, lambda directory=directory: self.fs.rm(directory, recursive=True))
            except FileNotFoundError:
                continue
            deleted.append(url)
        return deleted


def _info_from_manifest(url: str, manifest: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(
        url=url,
        step=int(manifest["step"]),
        epoch=int(manifest["epoch"]),
        time=float(manifest["time"]),
        reason=str(manifest.get("reason", "")),
        final=bool(manifest.get("final", False)),
        files={
            name: FileEntry(size_bytes=int(entry["size_bytes"]), sha256=str(entry["sha256"]))
            for name, entry in manifest["files"].items()
        },
        metrics={str(key): float(value) for key, value in manifest.get("metrics", {}).items()},
    )
