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

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from runner.errors import SpecError
from runner.instance.mailbox import Mailbox

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


def _parse(data: dict[str, Any] | None) -> PrefixClaim | None:
    if data is None:
        return None
    try:
        return PrefixClaim(
            job=str(data["job"]), store_id=str(data["store_id"]), claimed_at=float(data["claimed_at"]), version=int(data["version"])
        )
    except (ValueError, TypeError, KeyError):
        return None


def read_claim(mailbox: Mailbox) -> PrefixClaim | None:
    """The prefix's claim, or None when unclaimed (or the claim is unreadable: a damaged claim is treated as none)."""
    return _parse(mailbox.read(OWNER_NAME))


def owned_by(url: str, owner: str, where: str, *, removable: bool = False) -> SpecError:
    """The error for a prefix another job owns: who, and what the user can do."""
    return SpecError(
        f"checkpoint.url: {url} belongs to job {owner!r} {where}; two jobs cannot share a prefix: give this job another checkpoint.url"
        + (f", or if that job is gone for good, delete {url}/_spotrun/{OWNER_NAME}" if removable else "")
    )


def claim_prefix(mailbox: Mailbox, claim: PrefixClaim, *, ended_here: Callable[[str], bool]) -> Takeover | None:
    """Make ``claim`` the prefix's owner; returns a Takeover when it passed from an ended job, None when it was free.

    ``ended_here(job)`` says whether a job of this store has ended or is gone from it. A prefix
    owned by a live job, or by a job of another state store, is refused with SpecError naming it.
    """
    for _ in range(3):  # a claim removed between our look and our write: look again
        if mailbox.create(OWNER_NAME, asdict(claim)):
            return None
        current = read_claim(mailbox)
        if current is None and mailbox.exists(OWNER_NAME):
            raise SpecError(f"checkpoint.url: {mailbox.url_of(OWNER_NAME)} is unreadable; remove it if no job uses {mailbox.url}")
        if current is None:
            continue
        if current.job == claim.job and current.store_id == claim.store_id:
            return None
        if current.store_id != claim.store_id:
            since = datetime.fromtimestamp(current.claimed_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise owned_by(mailbox.url, current.job, f"of another state store ({current.store_id}), claimed {since}", removable=True)
        if not ended_here(current.job):
            raise owned_by(mailbox.url, current.job, "of this state store, still live")
        mailbox.remove(OWNER_NAME)
        if mailbox.create(OWNER_NAME, asdict(claim)):
            return Takeover(previous_job=current.job)
    raise SpecError(f"checkpoint.url: could not claim {mailbox.url}: other jobs are claiming it at the same time")


def release_claim(mailbox: Mailbox, claim: PrefixClaim) -> None:
    """Give the prefix up again (the job could not be recorded after all), if the claim is still ours."""
    current = read_claim(mailbox)
    if current is not None and (current.job, current.store_id, current.claimed_at) == (claim.job, claim.store_id, claim.claimed_at):
        mailbox.remove(OWNER_NAME)
