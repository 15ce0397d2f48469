"""A wheel of the spotrun that is running here: what `spotrun infra up` gives EC2 instances to install.

An instance must run the same spotrun as the controller that launched it (the agent and the
controller speak one protocol, the job spec is validated by the controller's version), and its
bootstrap runs as root, so it must not take whatever an index serves under the name ``spotrun``
that day. The controller therefore ships its own code: a wheel made from the installation it
runs, which Terraform puts in the checkpoint bucket and whose sha256 the user data checks before
installing it (terraform/README.md, "Which spotrun an instance runs").

- An installation from a wheel or an sdist (site-packages holds the files): the installed files
  are packed again as they are, with a fresh RECORD.
- An editable installation (``pip install -e``, the source tree is what runs): the source tree's
  own PEP 517 backend builds it, in a copy, so the checkout is left untouched.

Either way the wheel has fixed timestamps, so the same code gives the same bytes and the same
digest, and Terraform sees no change on an `infra up` that follows another.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from cloud.errors import ProviderError

DISTRIBUTION = "spotrun"
# 1980-01-01, the earliest time a zip entry can carry: every build stamps its files with it.
FIXED_EPOCH = 315532800
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# What an installer adds to a wheel's .dist-info (PEP 376, PEP 610): not part of the wheel.
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_BUILD_INPUTS = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
_BUILD_TIMEOUT_S = 300.0
# Run in the copy of the source tree: the PEP 517 backend that pyproject.toml names, without build isolation
# (whatever it needs is installed where spotrun runs, or the error says what is missing).
_BUILD = """
import importlib, sys, tomllib
backend = tomllib.load(open("pyproject.toml", "rb")).get("build-system", {}).get("build-backend", "setuptools.build_meta:__legacy__")
module, _, attribute = backend.partition(":")
hooks = importlib.import_module(module)
for part in filter(None, attribute.split(".")):
    hooks = getattr(hooks, part)
print(hooks.build_wheel(sys.argv[1]))
"""


def build_running_wheel(directory: Path) -> Path:
    """A wheel of the running spotrun in ``directory`` (other wheels there are removed); returns its path."""
    return build_wheel_of(running_distribution(), directory)


def running_distribution() -> importlib.metadata.Distribution:
    """The installed distribution this very code comes from.

    Not simply the first ``spotrun`` on sys.path: a checkout's ``spotrun.egg-info`` (left by an
    editable install) or a second environment's copy may come first, and neither is what runs.
    """
    here = Path(__file__).resolve()
    candidates = list(importlib.metadata.distributions(name=DISTRIBUTION))
    for distribution in candidates:
        source = editable_source(distribution)
        if source is not None and here.is_relative_to(source.resolve()):
            return distribution
    for distribution in candidates:
        if distribution.read_text("RECORD") is None:
            continue  # an .egg-info: metadata of a build, not an installation
        for path in distribution.files or ():
            if path.name == here.name and Path(str(distribution.locate_file(path))).resolve() == here:
                return distribution
    raise ProviderError(
        f"the running spotrun ({here.parent.parent}) was not installed by pip: `pip install .` (or `pip install -e .` in a checkout)"
    )


def build_wheel_of(distribution: importlib.metadata.Distribution, directory: Path) -> Path:
    """A wheel of ``distribution`` as installed, in ``directory``, which then holds no other wheel."""
    directory.mkdir(parents=True, exist_ok=True)
    source = editable_source(distribution)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
        built = _build_from_source(distribution, source, Path(scratch)) if source else _repack(distribution, Path(scratch))
        wheel = directory / built.name
        built.replace(wheel)
    for old in directory.glob("*.whl"):
        if old != wheel:
            old.unlink()
    return wheel


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, as ``sha256sum`` and Terraform's ``filesha256`` write it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def editable_source(distribution: importlib.metadata.Distribution) -> Path | None:
    """The source tree an editable installation runs from (PEP 610's direct_url.json), or None."""
    recorded = distribution.read_text("direct_url.json")
    if not recorded:
        return None
    try:
        direct_url = json.loads(recorded)
    except json.JSONDecodeError:
        return None
    url = urlparse(str(direct_url.get("url", "")))
    if not (direct_url.get("dir_info") or {}).get("editable") or url.scheme != "file":
        return None
    return Path(unquote(url.path))


def _build_from_source(distribution: importlib.metadata.Distribution, source: Path, scratch: Path) -> Path:
    """Build from a copy of what the source tree's build reads: its build files and its top-level packages."""
    if not (source / "pyproject.toml").is_file():
        raise ProviderError(f"spotrun runs from the source tree {source}, which has no pyproject.toml to build a wheel from")
    tree = scratch / "source"
    tree.mkdir()
    metadata = tomllib.loads((source / "pyproject.toml").read_text())
    readme = metadata.get("project", {}).get("readme")
    readme_file = readme.get("file") if isinstance(readme, dict) else readme
    for name in [*_BUILD_INPUTS, *([readme_file] if isinstance(readme_file, str) else [])]:
        if (source / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, tree / name)
    ignore = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for package in (distribution.read_text("top_level.txt") or "").split():
        if (source / package).is_dir():
            shutil.copytree(source / package, tree / package, ignore=ignore)
    out = scratch / "out"
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT_S,
        env={**os.environ, "SOURCE_DATE_EPOCH": str(FIXED_EPOCH)},
    )
    wheels = list(out.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise ProviderError(f"could not build a wheel of spotrun from {source} for the instances to install: {said[0]}")
    return wheels[0]


def _repack(distribution: importlib.metadata.Distribution, scratch: Path) -> Path:
    """The installed files of ``distribution`` as a wheel again: every file its RECORD lists inside site-packages."""
    listed = distribution.files
    if not listed:
        raise ProviderError(f"spotrun {distribution.version} was installed without a RECORD of its files; reinstall it with pip")
    files = sorted((PurePosixPath(str(path).replace(os.sep, "/")) for path in listed if _belongs_to_wheel(path)), key=str)
    info_dirs = {path.parts[0] for path in files if path.parts[0].endswith(".dist-info")}
    if len(info_dirs) != 1:
        raise ProviderError(f"spotrun {distribution.version}'s installed files name {len(info_dirs)} .dist-info folders, not one")
    (info_dir,) = info_dirs
    tags = [line.split(":", 1)[1].strip() for line in (distribution.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"]).lower()
    wheel = scratch / f"{name}-{distribution.version}-{'.'.join(sorted(set(tags))) or 'py3-none-any'}.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            data = Path(str(distribution.locate_file(str(path)))).read_bytes()
            _write_entry(archive, str(path), data)
            records.append(f"{path},sha256={_record_digest(data)},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        _write_entry(archive, f"{info_dir}/RECORD", ("\n".join(records) + "\n").encode())
    return wheel


def _belongs_to_wheel(path: importlib.metadata.PackagePath) -> bool:
    """Files in site-packages that came from the wheel: not scripts outside it, bytecode, or what the installer added."""
    parts = PurePosixPath(str(path).replace(os.sep, "/")).parts
    if not parts or parts[0] == ".." or "__pycache__" in parts or parts[-1].endswith(".pyc"):
        return False
    return not (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _INSTALLER_FILES)


def _write_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    archive.writestr(entry, data)


def _record_digest(data: bytes) -> str:
    """A RECORD's hash: urlsafe base64 of the sha256, without padding (PEP 376, the wheel spec)."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
