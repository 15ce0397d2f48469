"""Retention by soundness, recommits over damage, symlinks on the local filesystem, and manifests signed with the job's key."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from checkpoints import signing
from checkpoints.store import DATA_NAME, MANIFEST_NAME, CheckpointInfo, CheckpointStore, checkpoint_dir_name

KEY = bytes(range(32))


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"file://{tmp_path}/ckpts" if request.param == "file" else f"memory://spotrun-{uuid.uuid4().hex[:8]}/ckpts"


def _data(tmp_path: Path, step: int, size: int = 1024) -> Path:
    path = tmp_path / f"data-{step}.bin"
    path.write_bytes(bytes([step % 251]) * size)
    return path


def _commit(store: CheckpointStore, tmp_path: Path, *steps: int) -> dict[int, CheckpointInfo]:
    return {step: store.commit(_data(tmp_path, step), step=step, epoch=0, reason="periodic") for step in steps}


def _dir(store: CheckpointStore, step: int) -> str:
    return f"{store.root}/{checkpoint_dir_name(step)}"


def _truncate(store: CheckpointStore, step: int) -> None:
    store.fs.pipe_file(f"{_dir(store, step)}/{DATA_NAME}", b"cut off")


def _steps_on_storage(store: CheckpointStore) -> list[int]:
    return sorted(int(path.rstrip("/").rsplit("-", 1)[-1]) for path in store.fs.ls(store.root, detail=False) if "step-" in path)


# ------------------------------------------------------------------------------ retention


def test_a_damaged_newest_checkpoint_does_not_push_the_sound_one_out(url: str, tmp_path: Path) -> None:
    store = CheckpointStore(url)
    _commit(store, tmp_path, 10, 20)
    _truncate(store, 20)  # manifest intact, data cut short
    assert store.prune(keep=1) == []
    assert store.latest().step == 10
    emergency = store.commit(_data(tmp_path, 20), step=20, epoch=0, reason="emergency")  # the step is saved again
    assert emergency.reason == "emergency" and store.problem(emergency, check_sha256=True) is None
    assert store.latest(check_sha256=True).step == 20


def test_prune_deletes_damaged_and_partial_checkpoints_only_below_the_newest_sound_one(url: str, tmp_path: Path) -> None:
    store = CheckpointStore(url)
    infos = _commit(store, tmp_path, 10, 20, 25, 30, 40)
    _truncate(store, 20)
    _truncate(store, 25)
    _truncate(store, 40)
    for partial in (15, 45):
        store.fs.makedirs(_dir(store, partial), exist_ok=True)
        store.fs.pipe_file(f"{_dir(store, partial)}/{DATA_NAME}", b"partial")
    deleted = store.prune(keep=1, protect=frozenset({infos[25].url}))
    assert sorted(deleted) == sorted(store._url(_dir(store, step)) for step in (10, 15, 20))
    assert _steps_on_storage(store) == [25, 30, 40, 45]  # protected, newest sound, damaged and partial above it
    assert store.latest().step == 30


def test_keep_every_counts_only_sound_checkpoints(url: str, tmp_path: Path) -> None:
    store = CheckpointStore(url)
    _commit(store, tmp_path, 990, 1010, 1500, 2600)
    _truncate(store, 1010)
    store.prune(keep=1, keep_every=1000)
    assert [info.step for info in store.list()] == [2600, 1500]


def test_nothing_is_deleted_while_no_checkpoint_is_sound(url: str, tmp_path: Path) -> None:
    store = CheckpointStore(url)
    _commit(store, tmp_path, 10, 20)
    _truncate(store, 10)
    _truncate(store, 20)
    assert store.prune(keep=1) == [] and _steps_on_storage(store) == [10, 20]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "manifest of the wrong shape"])
def test_recommitting_over_a_damaged_commit_replaces_it(url: str, tmp_path: Path, damage: str) -> None:
    store = CheckpointStore(url)
    source = _data(tmp_path, 7)
    store.commit(source, step=7, epoch=0, reason="periodic")
    directory = _dir(store, 7)
    if damage == "truncated":
        _truncate(store, 7)
    elif damage == "flipped byte":
        store.fs.pipe_file(f"{directory}/{DATA_NAME}", b"\xff" + source.read_bytes()[1:])
    else:
        manifest = json.loads(store.fs.cat_file(f"{directory}/{MANIFEST_NAME}"))
        store.fs.pipe_file(f"{directory}/{MANIFEST_NAME}", json.dumps({**manifest, "files": []}).encode())
    again = store.commit(source, step=7, epoch=0, reason="emergency")
    assert store.problem(again, check_sha256=True) is None
    assert store.latest(check_sha256=True) == again and again.reason == "emergency"


# ------------------------------------------------------------------- symlinks (local files)


def _two_jobs(tmp_path: Path) -> tuple[CheckpointStore, CheckpointStore]:
    other, this = CheckpointStore(f"file://{tmp_path}/other-job"), CheckpointStore(f"file://{tmp_path}/this-job")
    other.commit(_data(tmp_path, 10), step=10, epoch=0, reason="periodic")
    this.commit(_data(tmp_path, 5), step=5, epoch=0, reason="periodic")
    return other, this


def test_a_symlinked_step_directory_is_ignored_and_never_deleted_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other, this = _two_jobs(tmp_path)
    link = Path(_dir(this, 1))
    link.symlink_to(_dir(other, 10), target_is_directory=True)
    this.commit(_data(tmp_path, 8), step=8, epoch=0, reason="periodic")
    with caplog.at_level(logging.WARNING):
        assert [info.step for info in this.list()] == [8, 5]
        assert sorted(this.prune(keep=1)) == [this._url(_dir(this, 5))]
    assert other.latest(check_sha256=True).step == 10 and link.is_symlink()
    assert f"ignoring {this._url(str(link))}: it is a symlink" in caplog.text


@pytest.mark.parametrize("linked", [[MANIFEST_NAME], [DATA_NAME], [MANIFEST_NAME, DATA_NAME]])
def test_a_step_directory_holding_a_symlink_is_ignored(tmp_path: Path, linked: list[str]) -> None:
    other, this = _two_jobs(tmp_path)
    directory = Path(_dir(this, 10))  # the other job's step, copied or linked file by file
    directory.mkdir()
    for name in (MANIFEST_NAME, DATA_NAME):
        source = Path(_dir(other, 10)) / name
        if name in linked:
            (directory / name).symlink_to(source)
        else:
            (directory / name).write_bytes(source.read_bytes())
    assert this.latest().step == 5
    this.commit(_data(tmp_path, 8), step=8, epoch=0, reason="periodic")
    this.prune(keep=1)
    assert other.latest(check_sha256=True).step == 10 and all((directory / name).is_symlink() for name in linked)


def test_commit_never_writes_through_a_symlinked_step_directory(tmp_path: Path) -> None:
    other, this = _two_jobs(tmp_path)
    link = Path(_dir(this, 20))
    link.symlink_to(_dir(other, 10), target_is_directory=True)
    committed = this.commit(_data(tmp_path, 20), step=20, epoch=0, reason="periodic")
    assert not link.is_symlink() and this.latest(check_sha256=True) == committed
    assert other.latest(check_sha256=True).step == 10
    assert (Path(_dir(other, 10)) / DATA_NAME).read_bytes() == _data(tmp_path, 10).read_bytes()


# ------------------------------------------------------------------------- the job's key


def _forge(store: CheckpointStore, tmp_path: Path, step: int, *, key: bytes | None, purpose: str = "manifest") -> None:
    """A checkpoint another job could write: valid schema, sizes and sha256 that match, any MAC but this job's."""
    info = CheckpointStore(store.url).commit(_data(tmp_path, step), step=step, epoch=0, reason="forged")
    if key is not None:
        manifest = json.loads(store.fs.cat_file(f"{_dir(store, step)}/{MANIFEST_NAME}"))
        store.fs.pipe_file(f"{_dir(store, step)}/{MANIFEST_NAME}", json.dumps(signing.signed(key, purpose, manifest)).encode())
    assert CheckpointStore(store.url).latest(check_sha256=True) is not None and info.step == step


def test_with_a_key_forged_manifests_are_never_resumed_from_nor_deleted(url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(url, key=KEY)
    _commit(store, tmp_path, 10, 20)
    _forge(store, tmp_path, 15, key=bytes(32))  # another job's key
    _forge(store, tmp_path, 30, key=None)  # no MAC at all
    _forge(store, tmp_path, 40, key=KEY, purpose="heartbeat")  # this job's key, replayed from a heartbeat
    with caplog.at_level(logging.WARNING):
        assert store.latest(check_sha256=True).step == 20
        assert [info.step for info in store.list()] == [20, 10]
        assert store.prune(keep=1) == [store._url(_dir(store, 10))]
    assert all(store.fs.exists(f"{_dir(store, step)}/{MANIFEST_NAME}") for step in (15, 30, 40))
    assert "not signed by this job's key" in caplog.text


def test_signed_checkpoints_resume_with_the_key_and_without_one(url: str, tmp_path: Path) -> None:
    signed = CheckpointStore(url, key=KEY)
    committed = signed.commit(_data(tmp_path, 10), step=10, epoch=0, reason="periodic", metrics={"loss": float("nan"), "acc": 0.5})
    assert committed.metrics == {"acc": 0.5}  # JSON (and so a MAC) has no NaN
    assert signed.latest(check_sha256=True) == committed
    assert signed.download(committed, tmp_path / "down").read_bytes() == _data(tmp_path, 10).read_bytes()
    assert CheckpointStore(url).latest(check_sha256=True) == committed
    assert CheckpointStore(url, key=bytes(32)).latest() is None


def test_with_a_key_a_forged_commit_of_the_same_step_and_data_is_replaced(url: str, tmp_path: Path) -> None:
    store = CheckpointStore(url, key=KEY)
    _forge(store, tmp_path, 20, key=None)
    committed = store.commit(_data(tmp_path, 20), step=20, epoch=0, reason="emergency")
    assert committed.reason == "emergency" and store.latest(check_sha256=True) == committed
