"""The wheel `spotrun infra up` gives instances: the very code running here, the same bytes each time, installable as a wheel."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import pytest

import cloud.running_wheel
from cloud.running_wheel import build_running_wheel, build_wheel_of, running_distribution, sha256_of


@pytest.fixture(scope="module")
def running_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_running_wheel(tmp_path_factory.mktemp("wheels"))


def _entries(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _assert_record_matches(entries: dict[str, bytes]) -> None:
    """Every file is in RECORD with its size and hash (as pip checks on install), and RECORD lists nothing else."""
    [record_name] = [name for name in entries if name.endswith(".dist-info/RECORD")]
    listed = {}
    for line in entries[record_name].decode().splitlines():
        path, digest, size = line.rsplit(",", 2)
        listed[path] = (digest, size)
    assert listed.keys() == entries.keys()
    for path, data in entries.items():
        if path != record_name:
            expected = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert listed[path] == (expected, str(len(data))), path


def test_the_wheel_is_the_running_code_and_the_same_bytes_every_time(running_wheel: Path, tmp_path: Path) -> None:
    entries = _entries(running_wheel)
    here = Path(cloud.running_wheel.__file__).resolve()
    root = here.parent.parent  # where the packages that run here live
    for name in (
        "cloud/running_wheel.py",
        "cloud/rendezvous.py",
        "runner/control/gc.py",
        "runner/cli/infra.py",
        "terraform/main.tf",
        "terraform/user_data.sh.tftpl",
    ):
        assert entries[name] == (root / name).read_bytes(), name
    assert not [name for name in entries if "__pycache__" in name or name.startswith("tests/")]
    distribution = running_distribution()
    assert running_wheel.name == f"spotrun-{distribution.version}-py3-none-any.whl"
    metadata = entries[f"spotrun-{distribution.version}.dist-info/METADATA"].decode()
    assert f"\nVersion: {importlib.metadata.version('spotrun')}\n" in metadata
    _assert_record_matches(entries)

    again = build_running_wheel(tmp_path / "again")
    assert sha256_of(again) == sha256_of(running_wheel)  # so `infra up` twice changes nothing


def test_an_installation_from_a_wheel_is_packed_again_file_for_file(running_wheel: Path, tmp_path: Path) -> None:
    # Installed as pip installs a wheel: its files in site-packages, plus what the installer adds.
    site = tmp_path / "site-packages"
    original = _entries(running_wheel)
    with zipfile.ZipFile(running_wheel) as archive:
        archive.extractall(site)
    [info] = {name.split("/")[0] for name in original if name.split("/")[0].endswith(".dist-info")}
    (site / "cloud" / "__pycache__").mkdir()
    (site / "cloud" / "__pycache__" / "aws.cpython-311.pyc").write_bytes(b"bytecode")
    (site / info / "INSTALLER").write_text("pip\n")
    (site / info / "direct_url.json").write_text('{"url": "file:///somewhere/spotrun.whl", "archive_info": {}}')
    record = site / info / "RECORD"
    record.write_text(record.read_text() + f"../../../bin/spotrun,,\n{info}/INSTALLER,,\ncloud/__pycache__/aws.cpython-311.pyc,,\n")

    repacked = build_wheel_of(importlib.metadata.Distribution.at(site / info), tmp_path / "out")

    assert repacked.name == running_wheel.name
    entries = _entries(repacked)
    assert entries.keys() == original.keys()
    assert all(entries[name] == original[name] for name in original if not name.endswith("/RECORD"))
    _assert_record_matches(entries)
