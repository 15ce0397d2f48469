"""A job owns its checkpoint prefix: one claim, made atomically before the job is recorded.

Two jobs on one ``checkpoint.url`` would share one spec file, heartbeat, stop request and
retention: the first job's next attempt would run the second's command, and each would prune the
other's checkpoints. So the first job to record itself writes ``_spotrun/owner.json`` with a
create-only write (S3 ``If-None-Match: *``, ``O_EXCL`` on a local disk), and every later job is
refused with an error naming the owner, unless that owner is a job of this same state store that
has ended (or that the store no longer has): then the prefix, and its checkpoints, pass to the
new job, which inherits the old job's key so that it can verify and resume from them.

The claim coordinates honest users; it is not what keeps a hostile instance out (any instance can
overwrite any object). That is the job key's work (``runner.instance.protocol``).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from fsspec.implementations.local import LocalFileSystem

from checkpoints.store import CheckpointStore
from runner.errors import SpecError

OWNER_NAME = "owner.json"
CLAIM_VERSION = 1


@dataclass(frozen=True)
class PrefixClaim:
    """Who owns a checkpoint prefix: a job of one state store."""

    job: str
    store_id: str
    claimed_at: float
    version: int = CLAIM_VERSION


@dataclass(frozen=True)
class Takeover:
    """A prefix passed on from an ended job of this store: whose key the new job inherits (None: none to inherit)."""

    previous_job: str | None


def _parse(raw: bytes) -> PrefixClaim | None:
    try:
        data = json.loads(raw)
        return PrefixClaim(job=str(data["job"]), store_id=str(data["store_id"]), claimed_at=float(data["claimed_at"]), version=int(data["version"]))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


def read_claim(store: CheckpointStore) -> PrefixClaim | None:
    """The prefix's claim, or None when unclaimed (or the claim is unreadable: a damaged claim is treated as none)."""
    path = store.spotrun_path(OWNER_NAME)
    try:
        return _parse(store.fs.cat_file(path))
    except FileNotFoundError:
        return None


def _create_exclusively(store: CheckpointStore, payload: bytes) -> bool:
    """Write the claim only if no object is there; False when one is (another job won)."""
    path = store.spotrun_path(OWNER_NAME)
    if isinstance(store.fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
        return True
    try:
        store.fs.pipe_file(path, payload, mode="create")  # s3fs: PutObject with If-None-Match: *
    except FileExistsError:
        return False
    except OSError as error:  # s3fs maps some 412 answers to EINVAL
        if error.errno == errno.EINVAL and "precondition" in str(error).lower():
            return False
        raise
    return True


def owned_by(url: str, owner: str, where: str, *, removable: bool = False) -> SpecError:
    """The error for a prefix another job owns: who, and what the user can do."""
    return SpecError(
        f"checkpoint.url: {url} belongs to job {owner!r} {where}; two jobs cannot share a prefix: give this job another checkpoint.url"
        + (f", or if that job is gone for good, delete {url}/_spotrun/{OWNER_NAME}" if removable else "")
    )


def claim_prefix(
    store: CheckpointStore, claim: PrefixClaim, *, ended_here: Callable[[str], bool]
) -> Takeover | None:
    """Make ``claim`` the prefix's owner; returns a Takeover when it passed from an ended job, None when it was free.

    ``ended_here(job)`` says whether a job of this store has ended or is gone from it. A prefix
    owned by a live job, or by a job of another state store, is refused with SpecError naming it.
    """
    payload = json.dumps(asdict(claim)).encode()
    for _ in range(3):  # a claim removed between our look and our write: look again
        if _create_exclusively(store, payload):
            return None
        current = read_claim(store)
        if current is None and store.fs.exists(store.spotrun_path(OWNER_NAME)):
            raise SpecError(f"checkpoint.url: {store.url}/_spotrun/{OWNER_NAME} is unreadable; remove it if no job uses {store.url}")
        if current is None:
            continue
        if current.job == claim.job and current.store_id == claim.store_id:
            return None
        if current.store_id != claim.store_id:
            since = datetime.fromtimestamp(current.claimed_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise owned_by(store.url, current.job, f"of another state store ({current.store_id}), claimed {since}", removable=True)
        if not ended_here(current.job):
            raise owned_by(store.url, current.job, "of this state store, still live")
        store.fs.rm_file(store.spotrun_path(OWNER_NAME))
        if _create_exclusively(store, payload):
            return Takeover(previous_job=current.job)
    raise SpecError(f"checkpoint.url: could not claim {store.url}: other jobs are claiming it at the same time")


def release_claim(store: CheckpointStore, claim: PrefixClaim) -> None:
    """Give the prefix up again (the job could not be recorded after all), if the claim is still ours."""
    current = read_claim(store)
    if current is not None and (current.job, current.store_id, current.claimed_at) == (claim.job, claim.store_id, claim.claimed_at):
        store.fs.rm_file(store.spotrun_path(OWNER_NAME))
