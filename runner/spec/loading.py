"""Load the user's classes from ``"path/to/file.py:Class"`` or ``"package.module:Class"`` references.

A file is imported under a module name derived from its absolute path and registered in
``sys.modules``, so one file is always one module: a checkpoint that pickled its classes (in the
hyperparameters, say) loads again in any process that loaded the same reference first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import TypeGuard, TypeVar

from runner.errors import SpecError

T = TypeVar("T")

REF_FORMS = "expected 'path/to/file.py:Class' or 'package.module:Class'"


def split_ref(ref: str) -> tuple[str, str]:
    """``(file path or module name, class name)`` of ``ref``; ValueError with ``REF_FORMS`` if it has neither form."""
    target, colon, name = ref.rpartition(":")
    if not colon or not name.isidentifier() or not (is_file_target(target) or _is_module_name(target)):
        raise ValueError(REF_FORMS)
    return target, name


def is_file_target(target: str) -> bool:
    """Whether the part before ``:`` names a file (``.py`` or a path) rather than an importable module."""
    return target.endswith(".py") or "/" in target or os.sep in target


def _is_module_name(target: str) -> bool:
    return all(part.isidentifier() for part in target.split("."))


def module_name_for_file(path: Path) -> str:
    """The module name a user file is imported under: its stem for people, a hash of its path for uniqueness."""
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", resolved.stem)
    return f"spotrun_user_{stem}_{digest}"


def load_object(ref: str, *, base: type[T], field: str, workdir: Path | None = None) -> type[T]:
    """The class ``ref`` names, checked to subclass ``base``; a SpecError starting with ``field`` otherwise.

    ``workdir`` makes packages there importable by module references, as ``python -m`` would.
    """
    try:
        target, name = split_ref(ref)
    except ValueError as error:
        raise SpecError(f"{field}: {error}, got {ref!r}") from error
    if is_file_target(target):
        module = _import_file(Path(target), field)
    else:
        if workdir is not None:
            _add_to_sys_path(workdir)
        module = _import_module(target, field)
    where = module.__file__ if is_file_target(target) else target
    found = getattr(module, name, None)
    if found is None:
        candidates = sorted(key for key, value in vars(module).items() if _is_strict_subclass(value, base))
        defines = f"its {base.__name__} subclasses: {', '.join(candidates)}" if candidates else f"it defines no {base.__name__} subclass"
        raise SpecError(f"{field}: expected a class {name} in {where} ({defines}), got {ref!r}")
    if not _is_strict_subclass(found, base):
        raise SpecError(f"{field}: expected a {base.__name__} subclass, got {ref!r}, which is {_kind(found)}")
    return found


def _import_file(path: Path, field: str) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise SpecError(f"{field}: expected an existing Python file, got {str(path)!r}")
    name = module_name_for_file(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as import does: dataclasses and pickle look it up there
    _add_to_sys_path(path.parent)  # sibling imports work as when the file is run as a script
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # user code: any failure becomes one message, cause chained
        del sys.modules[name]
        raise SpecError(f"{field}: expected {path} to import cleanly, got {_describe(error, path)}") from error
    return module


def _import_module(name: str, field: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise SpecError(
                f"{field}: expected an importable module {name} (installed, or a package in the working directory), "
                f"got ModuleNotFoundError: {error}"
            ) from error
        raise SpecError(f"{field}: expected module {name} to import cleanly, got {_describe(error, None)}") from error
    except (Exception, SystemExit) as error:  # user code: any failure becomes one message, cause chained
        raise SpecError(f"{field}: expected module {name} to import cleanly, got {_describe(error, None)}") from error


def _add_to_sys_path(directory: Path) -> None:
    # Appended, not prepended: a user's folder must not shadow installed packages (spotrun's own included).
    if str(directory) not in sys.path:
        sys.path.append(str(directory))


def _is_strict_subclass(value: object, base: type[T]) -> TypeGuard[type[T]]:
    return isinstance(value, type) and issubclass(value, base) and value is not base


def _kind(value: object) -> str:
    if isinstance(value, type):
        return f"a class deriving from {', '.join(parent.__name__ for parent in value.__bases__)}"
    return f"a {type(value).__name__}, not a class"


def _describe(error: BaseException, path: Path | None) -> str:
    """``Type: message`` on one line, with the line in the user's file where it was raised."""
    text = " ".join(str(error).split())
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if path is not None:
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
        if lines:
            described += f" (line {lines[-1]})"
    return described
