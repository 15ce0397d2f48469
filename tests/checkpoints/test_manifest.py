"""The manifest schema: anything that is not a well-formed manifest of its directory is a damaged checkpoint, never a crash."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoints import signing
from checkpoints.store import (
    DATA_NAME,
    MANIFEST_NAME,
    CheckpointInfo,
    CheckpointStore,
    FileEntry,
    ForeignManifest,
    ManifestError,
    checkpoint_dir_name,
    manifest_bytes,
    parse_manifest,
)

URL = "memory://bucket/run/step-000000000012"
KEY = bytes(range(32))


def _examples(count: int) -> settings:
    """Reproducible (CI must not flake on a new draw) and with no example database left in the repository."""
    return settings(max_examples=count, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(step: int = 12) -> dict[str, Any]:
    return {
        "format_version": 1,
        "spotrun_version": "x",
        "step": step,
        "epoch": 1,
        "time": 1700000000.5,
        "reason": "periodic",
        "final": False,
        "metrics": {"val_loss": 0.25},
        "files": {DATA_NAME: {"size_bytes": 2048, "sha256": "ab" * 32}},
    }


def _parse(manifest: Any, key: bytes | None = None) -> CheckpointInfo:
    return parse_manifest(json.dumps(manifest).encode(), url=URL, step=12, key=key)


def _with(**changes: Any) -> dict[str, Any]:
    manifest = _valid()
    for name, value in changes.items():
        if value is _MISSING:
            del manifest[name]
        else:
            manifest[name] = value
    return manifest


_MISSING = object()
_FILE = {"size_bytes": 1, "sha256": "ab" * 32}

DAMAGED = {
    "files is a list": _with(files=[]),
    "files is empty": _with(files={}),
    "files lacks the data file": _with(files={"other.bin": _FILE}),
    "files entry is a number": _with(files={DATA_NAME: 3}),
    "files escapes the directory": _with(files={DATA_NAME: _FILE, "../../other-job/MANIFEST.json": _FILE}),
    "metrics is a list": _with(metrics=[]),
    "metric is text": _with(metrics={"loss": "low"}),
    "metric too large for a float": _with(metrics={"loss": 10**400}),
    "step overflows to infinity": _with(step=1e999),
    "step is text": _with(step="12"),
    "step is a float": _with(step=12.0),
    "step is negative": _with(step=-12),
    "step is a bool": _with(step=True),
    "step is huge": _with(step=10**300),
    "step is another directory's": _with(step=13),
    "step missing": _with(step=_MISSING),
    "epoch is NaN": _with(epoch=math.nan),
    "epoch is a bool": _with(epoch=False),
    "time is NaN": _with(time=math.nan),
    "time is infinite": _with(time=math.inf),
    "time is too large for a float": _with(time=10**400),
    "time missing": _with(time=_MISSING),
    "final is a number": _with(final=1),
    "reason is a list": _with(reason=["x"]),
    "format_version missing": _with(format_version=_MISSING),
    "format_version from the future": _with(format_version=2),
    "sha256 is not hex": _with(files={DATA_NAME: {"size_bytes": 1, "sha256": "zz" * 32}}),
    "sha256 ends in a newline": _with(files={DATA_NAME: {"size_bytes": 1, "sha256": "ab" * 32 + "\n"}}),
    "file name with a NUL byte": _with(files={DATA_NAME: _FILE, "a\x00b": _FILE}),
    "sha256 is short": _with(files={DATA_NAME: {"size_bytes": 1, "sha256": "ab"}}),
    "size is negative": _with(files={DATA_NAME: {"size_bytes": -1, "sha256": "ab" * 32}}),
    "size is a float": _with(files={DATA_NAME: {"size_bytes": 1.5, "sha256": "ab" * 32}}),
    "a list, not an object": [_valid()],
    "null": None,
}


@pytest.mark.parametrize("manifest", DAMAGED.values(), ids=DAMAGED.keys())
def test_wrong_types_and_values_are_a_damaged_manifest(manifest: Any) -> None:
    with pytest.raises(ManifestError):
        _parse(manifest)


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"step": ' + b"9" * 5000 + b"}", b"\xff\xfe{", b"{", b""],
    ids=["nested 100k deep", "5000 digits", "not utf-8", "cut off", "empty"],
)
def test_unreadable_bytes_are_a_damaged_manifest(raw: bytes) -> None:
    with pytest.raises(ManifestError, match="not readable JSON"):
        parse_manifest(raw, url=URL, step=12)


def test_a_huge_manifest_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(ManifestError, match="larger than"):
        parse_manifest(b" " * (2 << 20) + json.dumps(_valid()).encode(), url=URL, step=12)


def test_older_manifests_with_a_nan_metric_still_resume() -> None:
    info = parse_manifest(json.dumps(_with(metrics={"loss": math.nan})).encode(), url=URL, step=12)
    assert math.isnan(info.metrics["loss"])


def test_with_a_key_only_a_manifest_signed_for_manifests_is_accepted() -> None:
    assert _parse(signing.signed(KEY, "manifest", _valid()), key=KEY).step == 12
    assert _parse(signing.signed(KEY, "manifest", _valid())).step == 12  # without a key, signed ones count too
    for forged in (
        _valid(),
        signing.signed(bytes(32), "manifest", _valid()),
        signing.signed(KEY, "heartbeat", _valid()),
        {**signing.signed(KEY, "manifest", _valid()), "step": 12, "epoch": 2},
    ):
        with pytest.raises(ForeignManifest, match="not signed by this job's key"):
            _parse(forged, key=KEY)
    with pytest.raises(ForeignManifest):
        parse_manifest(b"{not json", url=URL, step=12, key=KEY)


# ---------------------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["format_version", "spotrun_version", "step", "epoch", "time", "reason", "final", "metrics", "files", "mac"]


def _parses_or_is_damaged(raw: bytes, key: bytes | None = None) -> None:
    """The property: a CheckpointInfo of the right types, or ManifestError; nothing else ever leaves the parser."""
    try:
        info = parse_manifest(raw, url=URL, step=12, key=key)
    except ManifestError:
        return
    assert info.step == 12 and type(info.epoch) is int and info.epoch >= 0 and math.isfinite(info.time)
    assert DATA_NAME in info.files and all(type(entry.size_bytes) is int and entry.size_bytes >= 0 for entry in info.files.values())
    assert all(isinstance(value, float) for value in info.metrics.values()) and isinstance(info.final, bool)


@_examples(400)
@given(JSON)
def test_arbitrary_json_never_escapes_the_damaged_path(value: Any) -> None:
    """Each drawn value is tried whole, and in the place of every field of a valid manifest (about 5000 inputs)."""
    _parses_or_is_damaged(json.dumps(value).encode())
    _parses_or_is_damaged(json.dumps(value).encode(), key=KEY)
    for name in FIELDS:
        _parses_or_is_damaged(json.dumps({**_valid(), name: value}).encode())
    for name in ("size_bytes", "sha256"):
        _parses_or_is_damaged(json.dumps(_with(files={DATA_NAME: {**_FILE, name: value}})).encode())


@_examples(300)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(["drop", "set", "set in files entry"]), JSON), min_size=1, max_size=3))
def test_mutations_of_a_valid_manifest_never_escape_the_damaged_path(mutations: list[tuple[str, str, Any]]) -> None:
    manifest = _valid()
    entry = manifest["files"][DATA_NAME]
    for name, how, value in mutations:
        if how == "drop":
            manifest.pop(name, None)
        elif how == "set":
            manifest[name] = value
        else:
            entry[["size_bytes", "sha256", name][len(name) % 3]] = value
    _parses_or_is_damaged(json.dumps(manifest).encode())


@_examples(200)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_the_damaged_path(raw: bytes) -> None:
    _parses_or_is_damaged(raw)


INFOS = st.builds(
    CheckpointInfo,
    url=st.just(URL),
    step=st.just(12),
    epoch=st.integers(0, 2**63 - 1),
    time=st.floats(0, 1e12),
    reason=st.text(max_size=10),
    final=st.booleans(),
    files=st.dictionaries(
        st.sampled_from([DATA_NAME, "optimizer.bin", "rank-1.distcp"]),
        st.builds(FileEntry, size_bytes=st.integers(0, 2**63 - 1), sha256=st.text("0123456789abcdef", min_size=64, max_size=64)),
        min_size=1,
    ).map(lambda files: {DATA_NAME: FileEntry(0, "0" * 64), **files}),
    metrics=st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)


@_examples(200)
@given(INFOS, st.sampled_from([None, KEY]))
def test_what_commit_writes_reads_back_as_it_was(info: CheckpointInfo, key: bytes | None) -> None:
    assert parse_manifest(manifest_bytes(info, spotrun_version="v", key=key), url=URL, step=12, key=key) == info


# ------------------------------------------------------------------ discovery and resume


def _commit(store: CheckpointStore, tmp_path: Path, step: int) -> CheckpointInfo:
    data = tmp_path / f"data-{step}.bin"
    data.write_bytes(bytes([step % 251]) * 512)
    return store.commit(data, step=step, epoch=0, reason="periodic")


@pytest.mark.parametrize(
    "manifest",
    [DAMAGED["files is a list"], DAMAGED["step overflows to infinity"], DAMAGED["metrics is a list"]],
    ids=["files list", "step 1e999", "metrics list"],
)
def test_a_damaged_manifest_is_skipped_by_discovery_prune_and_latest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, manifest: dict[str, Any]
) -> None:
    store = CheckpointStore(f"file://{tmp_path}/ckpts")
    _commit(store, tmp_path, 10)
    newer = _commit(store, tmp_path, 12)
    (Path(newer.url.removeprefix("file://")) / MANIFEST_NAME).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert [info.step for info in store.list()] == [10]
        assert store.latest(check_sha256=True).step == 10
        assert store.prune(keep=1) == []  # a damaged commit newer than the newest sound one stays, for inspection
    assert f"ignoring damaged checkpoint {newer.url}" in caplog.text and "falling back to the previous one" in caplog.text
    _commit(store, tmp_path, 14)
    assert sorted(store.prune(keep=1)) == sorted([store._url(f"{store.root}/{checkpoint_dir_name(step)}") for step in (10, 12)])
