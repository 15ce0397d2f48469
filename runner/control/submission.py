"""Recording a new job: its checkpoint URL checked, its prefix claimed, its key made, its spec left next to its checkpoints.

The order keeps every failure clean: access to the URL is checked before the store is even
opened (``checkpoint_access_problem``), the prefix is claimed next (a second job on the same
``checkpoint.url`` is refused before anything is recorded), the job row is written next (with
the claim given back if that fails, say for a name already taken), and the spec last.
"""

from __future__ import annotations

import time
import uuid

from checkpoints import signing
from checkpoints.errors import CheckpointError
from checkpoints.retry import STORAGE_ERRORS
from checkpoints.store import SPOTRUN_DIR, CheckpointStore
from runner.control.ownership import PrefixClaim, claim_prefix, owned_by, release_claim
from runner.errors import JobNotFoundError
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import write_spec
from runner.spec.job_spec import JobSpec
from runner.state.store import Job, JobState, StateStore


def checkpoint_access_problem(url: str) -> str | None:
    """Why spotrun cannot list, write, read and delete under ``url`` (one line), or None when it can.

    Without credentials for an ``s3://`` URL (or with a bucket that is not there, or read-only)
    the job was recorded first and its first write failed: the run exited 1 and left a PENDING
    job that blocked the name. A small probe object under ``_spotrun/`` is written, read back and
    deleted: what the agent (heartbeats, logs) and retention (pruning) will need.
    """
    checkpoints = CheckpointStore(url)
    probe = f"access-probe-{uuid.uuid4().hex}.json"
    shown = f"{checkpoints.url}/{SPOTRUN_DIR}/{probe}"
    problem = None
    try:
        checkpoints.list()
        checkpoints.write_json(probe, {"probe": "spotrun checks that it can use this URL; safe to delete"})
        if checkpoints.read_json(probe) is None:
            problem = f"could not read back {shown} after writing it"
        checkpoints.fs.rm_file(checkpoints.spotrun_path(probe))
    except CheckpointError as error:
        problem = str(error)
    except STORAGE_ERRORS as error:  # the delete, which goes to the filesystem itself
        problem = f"could not delete {shown}: {error!r}"
    return None if problem is None else " ".join(problem.split())


def _ended_here(store: StateStore, name: str) -> bool:
    """Whether this store's job ``name`` has ended, or is gone: its prefix may pass to a new job."""
    try:
        return store.job(name).state.is_final
    except JobNotFoundError:
        return True


def _same_prefix(left: str, right: str) -> bool:
    return left.rstrip("/") == right.rstrip("/")


def record_job(store: StateStore, spec: JobSpec, *, spec_path: str, launched_by: str) -> tuple[Job, CheckpointStore]:
    """Claim the spec's checkpoint prefix and record the job; SpecError when another job owns the prefix."""
    name, url = spec.name, spec.checkpoint.url
    assert url is not None  # JobSpec resolves it
    # Jobs recorded before claims existed own their prefixes without a claim object.
    for other in store.jobs():
        if not other.state.is_final and other.name != name and _same_prefix(other.checkpoint_url, url):
            raise owned_by(url, other.name, f"of this state store, still live ({other.state.value})")
    checkpoints = CheckpointStore(url)
    mailbox = Mailbox(checkpoints)
    claim = PrefixClaim(job=name, store_id=store.store_id(), claimed_at=time.time())
    takeover = claim_prefix(mailbox, claim, ended_here=lambda owner: _ended_here(store, owner))
    inherited = None
    if takeover is not None and takeover.previous_job is not None:
        try:
            inherited = store.job(takeover.previous_job).key  # so the new job can verify the old one's checkpoints
        except JobNotFoundError:
            inherited = None
    try:
        job = store.create_job(
            spec,
            spec_path=spec_path,
            launched_by=launched_by,
            key=inherited or signing.new_key(),
        )
    except BaseException:
        release_claim(mailbox, claim)
        raise
    try:
        write_spec(mailbox, spec)
    except CheckpointError as error:
        store.set_state(job.name, JobState.FAILED, f"could not write the job description: {error}")
        raise
    return job, checkpoints
