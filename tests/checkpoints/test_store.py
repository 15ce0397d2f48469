"""The checkpoint store on real backends: commit order, discovery, damage fallback, retention."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from checkpoints import latest
from checkpoints.store import MANIFEST_NAME, CheckpointStore


@pytest.fixture(params=["file", "memory", "s3"])
def checkpoint_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/ckpts"
    if request.param == "memory":
        return f"memory://spotrun-{uuid.uuid4().hex[:8]}/ckpts"
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/runs/one"


def _data(tmp_path: Path, step: int, size: int = 2048) -> Path:
    path = tmp_path / f"data-{step}.bin"
    path.write_bytes(bytes([step % 251]) * size)
    return path


def _flip_one_byte(store: CheckpointStore, step: int) -> None:
    info = next(info for info in store.list() if info.step == step)
    path = f"{store.fs._strip_protocol(info.url)}/model.ckpt"
    content = bytearray(store.fs.cat_file(path))
    content[len(content) // 2] ^= 0xFF
    store.fs.pipe_file(path, bytes(content))


def test_commit_then_discover_newest_first(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    assert store.list() == [] and store.latest() is None
    for step in (10, 20, 30):
        store.commit(_data(tmp_path, step), step=step, epoch=step // 10, reason="periodic")
    assert [info.step for info in store.list()] == [30, 20, 10]
    newest = latest(checkpoint_url)
    assert newest is not None and newest.step == 30 and newest.size_bytes == 2048


def test_data_without_manifest_is_invisible(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    store.commit(_data(tmp_path, 10), step=10, epoch=0, reason="periodic")
    store.fs.makedirs(f"{store.root}/step-000000000020", exist_ok=True)
    store.fs.pipe_file(f"{store.root}/step-000000000020/model.ckpt", b"half a checkpoint")
    assert [info.step for info in store.list()] == [10]


def test_flipped_byte_falls_back_to_previous_with_warning(checkpoint_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(checkpoint_url)
    for step in (10, 20):
        store.commit(_data(tmp_path, step), step=step, epoch=0, reason="periodic")
    _flip_one_byte(store, 20)
    assert store.latest(check_sha256=False).step == 20  # same size: only the hash can tell
    assert store.latest(check_sha256=True).step == 10
    assert "skipping damaged checkpoint" in caplog.text and "sha256" in caplog.text


def test_truncated_data_and_garbled_manifest_are_skipped(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    for step in (10, 20, 30):
        store.commit(_data(tmp_path, step), step=step, epoch=0, reason="periodic")
    store.fs.pipe_file(f"{store.root}/step-000000000030/model.ckpt", b"short")
    store.fs.pipe_file(f"{store.root}/step-000000000020/{MANIFEST_NAME}", b"{not json")
    assert store.latest().step == 10


def test_download_checks_the_hash(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    source = _data(tmp_path, 7)
    info = store.commit(source, step=7, epoch=0, reason="periodic")
    local = store.download(info, tmp_path / "downloaded")
    assert local.read_bytes() == source.read_bytes()


def test_recommitting_a_step_keeps_the_committed_one_when_it_holds_the_same_file(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    first = store.commit(_data(tmp_path, 5), step=5, epoch=0, reason="periodic")
    again = store.commit(_data(tmp_path, 5), step=5, epoch=0, reason="emergency")
    assert again == first  # not rewritten: same reason, same time
    other = store.commit(_data(tmp_path, 6), step=5, epoch=0, reason="final", final=True)  # other state: it replaces
    assert store.latest(check_sha256=True) == other and other.final and other.files != first.files


def test_prune_keeps_newest_and_the_resumed_one(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    infos = {step: store.commit(_data(tmp_path, step), step=step, epoch=0, reason="periodic") for step in (10, 20, 30, 40)}
    store.fs.makedirs(f"{store.root}/step-000000000015", exist_ok=True)  # a stale partial save
    store.fs.pipe_file(f"{store.root}/step-000000000015/model.ckpt", b"partial")
    store.fs.makedirs(f"{store.root}/step-000000000050", exist_ok=True)  # a save that may still be in flight
    store.fs.pipe_file(f"{store.root}/step-000000000050/model.ckpt", b"in flight")
    deleted = store.prune(keep=2, protect=frozenset({infos[10].url}))
    assert [info.step for info in store.list()] == [40, 30, 10]
    assert sorted(deleted) == sorted([infos[20].url, store._url(f"{store.root}/step-000000000015")])
    assert store.fs.exists(f"{store.root}/step-000000000050/model.ckpt")


def test_manifest_records_what_a_user_needs(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    store.commit(_data(tmp_path, 3), step=3, epoch=1, reason="final", final=True, metrics={"val_acc": 0.9}, spotrun_version="x")
    manifest = json.loads(store.fs.cat_file(f"{store.root}/step-000000000003/{MANIFEST_NAME}"))
    assert manifest["format_version"] == 1 and manifest["spotrun_version"] == "x"
    assert manifest["files"]["model.ckpt"]["size_bytes"] == 2048 and len(manifest["files"]["model.ckpt"]["sha256"]) == 64
    assert manifest["final"] is True and manifest["metrics"] == {"val_acc": 0.9}


def test_unknown_fsspec_protocol_names_it() -> None:
    with pytest.raises(ValueError, match="nosuchproto"):
        CheckpointStore("nosuchproto://bucket/x")


def test_s3_checkpoint_is_a_real_object_in_the_bucket(s3_bucket: str, tmp_path: Path, moto_endpoint: str) -> None:
    import boto3

    CheckpointStore(f"{s3_bucket}/r").commit(_data(tmp_path, 1), step=1, epoch=0, reason="periodic")
    keys = {item["Key"] for item in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket=s3_bucket[5:])["Contents"]}
    assert keys == {"r/step-000000000001/model.ckpt", "r/step-000000000001/MANIFEST.json"}
    assert fsspec.filesystem("s3").exists(f"{s3_bucket[5:]}/r/step-000000000001/MANIFEST.json")


def test_prune_keep_every_keeps_the_first_checkpoint_of_each_interval(checkpoint_url: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_url)
    for step in (990, 1010, 1500, 2005, 2400, 2600):
        store.commit(_data(tmp_path, step), step=step, epoch=0, reason="periodic")
    store.prune(keep=1, keep_every=1000)
    assert [info.step for info in store.list()] == [2600, 2005, 1010]
