"""Committed checkpoints on any fsspec URL.

Layout under the checkpoint URL::

    step-000000001200/model.ckpt       a standard Lightning checkpoint
    step-000000001200/MANIFEST.json    written last: its presence is the commit
    _spotrun/...                       heartbeats and logs, never read as checkpoints

The manifest lists every object with its size and sha256, so discovery can tell a complete
checkpoint from one that was cut off, damaged or half deleted, and fall back to the previous one.
What a manifest must hold is :func:`parse_manifest`'s one schema; anything else (wrong types, a
step that is not its directory's, numbers out of range, JSON nested too deep) is a damaged
checkpoint, warned about and passed over, never an exception out of discovery.

Any job's code can write into any job's prefix (one instance role for the bucket), so a store
given the job's key (:mod:`checkpoints.signing`) signs its manifests and treats one without a
valid MAC as not this job's: never resumed from (its pickle could run anything), never deleted.
On the local filesystem a step directory that is a symlink, or holds one, is passed over the same
way: reading or deleting through it would reach another job's files.

Every call that talks to storage passes one door, :meth:`CheckpointStore._io`: transient errors
(throttling, 5xx, dropped connections) are retried under a bounded :class:`RetryPolicy`, and what
still fails becomes a ``CheckpointError`` naming the URL, the operation and the last error.
Retrying never commits a half-written object: each retried unit is idempotent (a whole upload,
a whole temporary-write-then-move), and the manifest is written only after the data's size was
read back and matched.
"""

from __future__ import annotations

import builtins
import enum
import functools
import hashlib
import json
import logging
import math
import re
import reprlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from fsspec import AbstractFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.implementations.local import LocalFileSystem

from checkpoints import signing
from checkpoints.errors import CheckpointError
from checkpoints.retry import STORAGE_ERRORS, RetryPolicy, filesystem_for, upload_options

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_PURPOSE = "manifest"  # what a manifest's MAC is for (signing.py: a MAC never validates another purpose)
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes; more is not one, and is not read whole
DATA_NAME = "model.ckpt"
SPOTRUN_DIR = "_spotrun"
_STEP_DIGITS = 12
# Each matched whole (fullmatch: a `$` would let a trailing newline through; `\d` any script's digits).
_CHECKPOINT_DIR = re.compile(rf"step-([0-9]{{{_STEP_DIGITS}}})")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # and not "." or "..": a plain name inside the step directory
_MAX_STEP = 10**_STEP_DIGITS - 1  # what a directory name can hold
_MAX_COUNT = 2**63 - 1  # sizes and epochs: what filesystems and torch count in
_HASH_CHUNK_BYTES = 8 * 1024 * 1024
_T = TypeVar("_T")


def checkpoint_dir_name(step: int) -> str:
    """The one place checkpoint directory names are made: sortable by step."""
    return f"step-{step:0{_STEP_DIGITS}d}"


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestError(Exception):
    """A manifest that does not describe a usable checkpoint of this job; the message says why.

    Deliberately not a ``ValueError``: storage errors are ``ValueError`` too, and a damaged
    manifest must never be mistaken for a failing storage call or the other way round.
    """


class ForeignManifest(ManifestError):
    """A manifest without a valid MAC under the store's key: another job's, or forged."""


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


def manifest_bytes(info: CheckpointInfo, *, spotrun_version: str = "", key: bytes | None = None) -> bytes:
    """The MANIFEST.json that commits ``info`` (signed when ``key`` is given); :func:`parse_manifest` reads it back.

    Strict JSON (no NaN): the MAC covers a canonical JSON form, which has none.
    """
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "spotrun_version": spotrun_version,
        "step": info.step,
        "epoch": info.epoch,
        "time": info.time,
        "reason": info.reason,
        "final": info.final,
        "metrics": info.metrics,
        "files": {name: {"size_bytes": entry.size_bytes, "sha256": entry.sha256} for name, entry in info.files.items()},
    }
    if key is not None:
        manifest = signing.signed(key, MANIFEST_PURPOSE, manifest)
    return json.dumps(manifest, indent=1, allow_nan=False).encode()


def parse_manifest(raw: bytes, *, url: str, step: int, key: bytes | None = None) -> CheckpointInfo:
    """The checkpoint the manifest ``raw`` of directory ``url`` (named for ``step``) describes, or ``ManifestError`` saying why not.

    The one schema of a manifest:

    - a JSON object of at most ``MAX_MANIFEST_BYTES``; with ``key``, carrying a valid MAC for
      ``MANIFEST_PURPOSE`` under it (else ``ForeignManifest``; unreadable bytes are foreign too,
      since nothing shows this job wrote them);
    - ``format_version``: ``FORMAT_VERSION``; ``step``: the directory's step; ``epoch``: a whole
      number >= 0 (JSON integers only: not ``true``, ``12.0`` nor ``"12"``); ``time``: a finite
      number >= 0;
    - ``reason`` (text), ``final`` (true/false): optional;
    - ``metrics``: optional, an object of numbers (non-finite ones too: older manifests held NaN losses);
    - ``files``: an object naming ``DATA_NAME`` and any other plain file names (letters, digits,
      ``._-``; not ``.``/``..``: discovery reads and hashes only inside the directory), each with
      ``size_bytes`` (a whole number >= 0) and ``sha256`` (64 lowercase hex digits).

    ``spotrun_version`` and any other key are not read (a newer spotrun may add some; a MAC covers them all the same).
    """
    try:
        manifest = _decode(raw)
    except ManifestError as error:
        if key is not None:
            raise ForeignManifest(f"not signed by this job's key ({error})") from error
        raise
    if key is not None and not signing.is_authentic(key, MANIFEST_PURPOSE, manifest):
        raise ForeignManifest("not signed by this job's key")
    if not isinstance(manifest, dict):
        raise ManifestError(f"a JSON {type(manifest).__name__}, not an object")
    version = _whole_number(manifest, "format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"format_version {version}; this spotrun reads format {FORMAT_VERSION}")
    recorded_step = _whole_number(manifest, "step", limit=_MAX_STEP)
    if recorded_step != step:
        raise ManifestError(f"step {recorded_step}, but its directory is step {step}")
    moment = _number(manifest.get("time"))
    if moment is None or not math.isfinite(moment) or moment < 0:
        raise ManifestError(f"time is {_shown(manifest.get('time'))}, not a number of seconds >= 0")
    return CheckpointInfo(
        url=url,
        step=step,
        epoch=_whole_number(manifest, "epoch"),
        time=moment,
        reason=_optional(manifest, "reason", str, ""),
        final=_optional(manifest, "final", bool, False),
        files=_files(manifest.get("files")),
        metrics=_metrics(manifest.get("metrics", {})),
    )


def _decode(raw: bytes) -> Any:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, over 4300 digits, nested too deep
        raise ManifestError(f"not readable JSON ({error})") from error


def _number(value: Any) -> float | None:
    """``value`` as a float; None when it is no JSON number (``true`` is not one) or too large for a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _shown(value: Any) -> str:
    """A field's value for a message, cut short: it may be huge or nested thousands deep."""
    return reprlib.repr(value)


def _whole_number(record: dict[str, Any], name: str, *, limit: int = _MAX_COUNT) -> int:
    value = record.get(name)
    if type(value) is not int or not 0 <= value <= limit:
        raise ManifestError(f"{name} is {_shown(value)}, not a whole number from 0 to {limit}")
    return value


def _optional(record: dict[str, Any], name: str, kind: type[_T], default: _T) -> _T:
    value = record.get(name, default)
    if not isinstance(value, kind):
        raise ManifestError(f"{name} is {_shown(value)}, not {kind.__name__}")
    return value


def _metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise ManifestError(f"metrics is {_shown(metrics)}, not an object of numbers")
    parsed = {}
    for name, value in metrics.items():
        number = _number(value)
        if number is None:
            raise ManifestError(f"metrics[{_shown(name)}] is {_shown(value)}, not a number")
        parsed[name] = number
    return parsed


def _files(files: Any) -> dict[str, FileEntry]:
    if not isinstance(files, dict) or DATA_NAME not in files:
        raise ManifestError(f"files is {_shown(files)}, not an object naming {DATA_NAME}")
    entries = {}
    for name, entry in files.items():
        if not _FILE_NAME.fullmatch(name) or name in (".", ".."):
            raise ManifestError(f"files names {_shown(name)}, which is not a plain file name")
        if not isinstance(entry, dict):
            raise ManifestError(f"files[{_shown(name)}] is {_shown(entry)}, not an object")
        sha256 = entry.get("sha256")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise ManifestError(f"files[{_shown(name)}].sha256 is {_shown(sha256)}, not 64 lowercase hex digits")
        entries[name] = FileEntry(size_bytes=_whole_number(entry, "size_bytes"), sha256=sha256)
    return entries


class _Standing(enum.Enum):
    """What discovery makes of one step directory."""

    SOUND = "sound"  # a valid manifest whose every object has the size it records
    DAMAGED = "damaged"  # a manifest that fails the schema, or objects missing or of the wrong size
    PARTIAL = "partial"  # no manifest: a save cut short, or one still in flight
    FOREIGN = "foreign"  # with a key: a manifest not signed by it; never used, never deleted


@dataclass(frozen=True)
class _StepDirectory:
    """One step directory as retention judged it."""

    step: int
    path: str
    standing: _Standing
    has_manifest: bool


class CheckpointStore:
    """Writes, discovers, verifies and prunes the checkpoints under one URL.

    ``fs`` is used as given; without it the store makes one from the URL with
    :func:`~checkpoints.retry.filesystem_for` (fewer retries inside s3fs/botocore, so
    ``retry`` bounds the total). ``retry`` is the policy for transient storage errors. With
    ``key`` (the job's, :func:`checkpoints.signing.key_from_environment`) manifests are written
    signed and only signed ones count; without it any well-formed manifest does, signed or not.
    """

    def __init__(
        self, url: str, fs: AbstractFileSystem | None = None, *, retry: RetryPolicy | None = None, key: bytes | None = None
    ) -> None:
        if fs is None:
            fs, root = filesystem_for(url)
        else:
            root = fs._strip_protocol(url)
        self.fs: AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.key = key
        self._has_links = isinstance(fs, LocalFileSystem)  # object stores have no symlinks to follow
        self._warned: set[str] = set()

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
        url: str = self.fs.unstrip_protocol(path)
        return url

    def _warn_once(self, message: str) -> None:
        """Discovery runs at every prune: say each thing it passes over once per store, not once per checkpoint."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

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

        A step already committed with this very file (same size and sha256, in the manifest and
        in storage) is left as it is. Anything else there (a damaged or foreign commit, another
        file, leftovers of an interrupted save) is replaced: its manifest goes first, so the step
        is never committed with data it does not describe; then the data; the manifest last. So a
        returned commit is durable and sound, which is what an emergency save reports. Symlinks
        in the way (local filesystem) are removed themselves, never written through.
        ``upload_callback`` hears the upload's progress; an exception it raises ends the upload
        and leaves nothing committed. Non-finite ``metrics`` are left out of the manifest (JSON has
        no NaN); the checkpoint itself keeps them.
        """
        directory = self._path(checkpoint_dir_name(step))
        entry = FileEntry(size_bytes=data_file.stat().st_size, sha256=sha256_of_file(data_file))
        for link in self._symlinks(directory):
            log.warning("removing symlink %s in the way of checkpoint step %d (its target is left alone)", self._url(link), step)
            self._io("delete", link, functools.partial(self.fs.rm_file, link))
        try:
            existing = self._read_manifest(directory, step)
            unfit = None if existing is None else self._unlike(existing, entry)
        except ManifestError as error:
            existing, unfit = None, f"manifest: {error}"
        if existing is not None and unfit is None:
            return existing
        if unfit is not None:
            log.warning("replacing the commit of step %d at %s: %s", step, self._url(directory), unfit)
            self._remove_manifest(directory)
        data_path = f"{directory}/{DATA_NAME}"
        try:
            self._make_directory(directory)
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
        info = CheckpointInfo(
            url=self._url(directory),
            step=step,
            epoch=epoch,
            time=time.time(),
            reason=reason,
            final=final,
            files={DATA_NAME: entry},
            metrics={name: float(value) for name, value in (metrics or {}).items() if math.isfinite(value)},
        )
        payload = manifest_bytes(info, spotrun_version=spotrun_version, key=self.key)
        self._write_atomically(f"{directory}/{MANIFEST_NAME}", payload)
        log.info("committed checkpoint step %d (%s, %d bytes) at %s", step, reason, entry.size_bytes, info.url)
        return info

    def _unlike(self, existing: CheckpointInfo, entry: FileEntry) -> str | None:
        """Why the commit ``existing`` is not the file ``entry`` durably stored, or None when it is."""
        if existing.files != {DATA_NAME: entry}:
            return "it holds a different file"
        return self.problem(existing, check_sha256=True)

    def _remove_manifest(self, directory: str) -> None:
        """Uncommit ``directory``: without its manifest nothing reads or keeps it as a checkpoint."""
        manifest = f"{directory}/{MANIFEST_NAME}"
        try:
            self._io("delete", manifest, lambda: self.fs.rm_file(manifest))
        except FileNotFoundError:
            pass

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
            self._make_directory(path.rsplit("/", 1)[0])
            self._io("write", path, write_then_move)
        except FileNotFoundError as error:
            raise CheckpointError(f"could not write {self._url(path)}: {error!r}") from error

    def _make_directory(self, directory: str) -> None:
        """Where directories exist (a local disk), make ``directory``; object stores need none.

        On S3 (and GCS) ``makedirs`` would create a missing *bucket*: a typo in checkpoint.url
        would make a new bucket in the user's account instead of failing.
        """
        if isinstance(self.fs, LocalFileSystem):
            self._io("create", directory, lambda: self.fs.makedirs(directory, exist_ok=True))

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        """Atomically write a bookkeeping JSON object under ``_spotrun/``."""
        self.write_bytes(name, json.dumps(payload).encode())

    def write_bytes(self, name: str, payload: bytes) -> None:
        """Atomically write a bookkeeping object (a log, say) under ``_spotrun/``."""
        self._write_atomically(self.spotrun_path(name), payload)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A bookkeeping JSON object under ``_spotrun/``, or None when absent, unreadable or not a JSON object."""
        path = self.spotrun_path(name)
        try:
            value: object = json.loads(self._io("read", path, lambda: self.fs.cat_file(path)))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            log.warning("ignoring unreadable %s: %s", self._url(path), error)
            return None
        if not isinstance(value, dict):
            log.warning("ignoring %s: a JSON %s, not an object", self._url(path), type(value).__name__)
            return None
        return value

    def _read_manifest(self, directory: str, step: int) -> CheckpointInfo | None:
        """The checkpoint committed in ``directory``, None when it has no manifest; ``ManifestError`` when it cannot be used."""
        path = f"{directory}/{MANIFEST_NAME}"
        try:
            raw = self._io("read", path, lambda: self.fs.cat_file(path, start=0, end=MAX_MANIFEST_BYTES + 1))
        except FileNotFoundError:
            return None
        return parse_manifest(raw, url=self._url(directory), step=step, key=self.key)

    def _symlinks(self, directory: str) -> list[str]:
        """``directory`` itself if it is a symlink, else the symlinks directly in it; none where the filesystem has none.

        Only the top level matters: checkpoint objects are plain names in their directory, and
        ``rm(recursive=True)`` (``shutil.rmtree``) removes deeper links without following them.
        """
        if not self._has_links:
            return []
        try:
            if self._io("inspect", directory, lambda: self.fs.islink(directory)):
                return [directory]
            entries = self._io("list", directory, lambda: self.fs.ls(directory, detail=True))
        except FileNotFoundError:
            return []
        return [entry["name"] for entry in entries if entry.get("islink")]

    def _step_directories(self) -> list[tuple[int, str]]:
        """Step directories newest first, without those that are or hold symlinks (warned about, never followed)."""
        try:
            entries = self._io("list", self.root, lambda: self.fs.ls(self.root, detail=True))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            path = entry["name"].rstrip("/")
            match = _CHECKPOINT_DIR.fullmatch(path.rsplit("/", 1)[-1])
            if not match or not (entry.get("islink") or entry.get("type") == "directory"):
                continue
            links = self._symlinks(path)
            if links:
                self._warn_once(
                    f"ignoring {self._url(path)}: {'it is' if links == [path] else 'it holds'} a symlink "
                    f"({', '.join(self._url(link) for link in links)}), which could lead out of {self.url}; "
                    "it is never resumed from nor deleted. Replace it with a real directory or remove it."
                )
                continue
            found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def _discover(self, directory: str, step: int) -> CheckpointInfo | ManifestError | None:
        """The manifest of ``directory``: its checkpoint, why it was rejected (warned about once), or None when absent."""
        try:
            return self._read_manifest(directory, step)
        except ForeignManifest as error:
            self._warn_once(f"ignoring checkpoint {self._url(directory)} (manifest: {error}): it is never resumed from nor deleted")
            return error
        except ManifestError as error:
            self._warn_once(f"ignoring damaged checkpoint {self._url(directory)} (manifest: {error}); falling back to the previous one")
            return error

    def list(self) -> list[CheckpointInfo]:
        """Committed checkpoints whose manifest passes the schema (and the MAC, with a key), newest first; objects not verified."""
        found = (self._discover(directory, step) for step, directory in self._step_directories())
        return [info for info in found if isinstance(info, CheckpointInfo)]

    def problem(self, info: CheckpointInfo, *, check_sha256: bool) -> str | None:
        """Why ``info`` cannot be used (missing or wrong-sized object, sha256 mismatch), or None if it is sound."""
        directory = self.fs._strip_protocol(info.url)
        for name, entry in info.files.items():
            path = f"{directory}/{name}"
            try:
                size = self._io("read the size of", path, functools.partial(self.fs.size, path))
                if size != entry.size_bytes:
                    return f"{name} has {size} bytes, manifest says {entry.size_bytes}"
                if check_sha256 and self._io("hash", path, functools.partial(self._sha256_of_object, path)) != entry.sha256:
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

    def _survey(self) -> builtins.list[_StepDirectory]:  # builtins: ``list`` in this class is the method above
        """Every step directory discovery follows, newest first, with its standing (sizes checked, not sha256)."""
        surveyed = []
        for step, directory in self._step_directories():
            found = self._discover(directory, step)
            if isinstance(found, ForeignManifest):
                standing = _Standing.FOREIGN
            elif isinstance(found, ManifestError):
                standing = _Standing.DAMAGED
            elif found is None:
                standing = _Standing.PARTIAL
            else:
                standing = _Standing.SOUND if self.problem(found, check_sha256=False) is None else _Standing.DAMAGED
            surveyed.append(_StepDirectory(step, directory, standing, has_manifest=found is not None))
        return surveyed

    def prune(self, keep: int, *, keep_every: int | None = None, protect: frozenset[str] = frozenset()) -> builtins.list[str]:
        """Delete what retention does not keep; returns the URLs deleted.

        Only SOUND checkpoints (valid manifest, with this job's MAC when the store has a key, and
        every object of the size it records) count toward ``keep``: the newest ``keep`` of them
        stay, and with ``keep_every`` (steps) the first sound one at or after each multiple of it
        (keep_every=1000 with checkpoints at 990, 1010, 1500, 2005: 1010 and 2005 stay). The
        newest sound checkpoint and every URL in ``protect`` (the one a run resumed from) are
        never deleted. Size, not sha256, decides soundness here: hashing every checkpoint at every
        prune would read them all back; a flipped byte is caught where it matters, by
        ``latest(check_sha256=True)`` and by :meth:`download`.

        A damaged checkpoint (manifest failing the schema, or an object missing or of the wrong
        size) and a partial one (no manifest) are deleted once a newer sound checkpoint exists:
        that one is what a resume takes, and they would never be resumed from. Newer than every
        sound checkpoint they stay: a partial one may be a save still in flight, a damaged one is
        the evidence of what went wrong, and a commit of that step replaces either. With no sound
        checkpoint nothing is deleted. Never touched: foreign manifests (not signed by the
        store's key) and step directories that are or hold symlinks (which discovery ignores).

        The manifest goes first, so a deletion cut short leaves an uncommitted directory, never a
        committed one with missing data.
        """
        surveyed = self._survey()
        sound = [found for found in surveyed if found.standing is _Standing.SOUND]
        if not sound:
            return []
        newest_sound = sound[0].step
        keeping = {found.path for found in sound[: max(keep, 1)]}
        if keep_every:
            first_of_interval: dict[int, str] = {}
            for found in reversed(sound):  # oldest first
                first_of_interval.setdefault(found.step // keep_every, found.path)
            keeping |= {path for interval, path in first_of_interval.items() if interval > 0}
        deleted = []
        for found in surveyed:
            url = self._url(found.path)
            if found.path in keeping or url in protect or found.standing is _Standing.FOREIGN:
                continue
            if found.standing is not _Standing.SOUND and found.step >= newest_sound:
                continue
            try:
                if found.has_manifest:
                    self._remove_manifest(found.path)
                self._io("delete", found.path, functools.partial(self.fs.rm, found.path, recursive=True))
            except FileNotFoundError:
                continue
            if found.standing is not _Standing.SOUND:
                log.info("retention deleted %s checkpoint %s (a newer sound one exists)", found.standing.value, url)
            deleted.append(url)
        return deleted
