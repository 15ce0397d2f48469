"""The user's own settings file: which state database to use (``db``) and the name to record as who launched a job (``user``).

``$SPOTRUN_CONFIG``, else ``config.yaml`` in the spotrun home. Environment variables win over the
file (``SPOTRUN_DB``, ``SPOTRUN_USER``), so a CI runner can override a shared config.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from runner.errors import SpecError

CONFIG_VARIABLE = "SPOTRUN_CONFIG"
USER_VARIABLE = "SPOTRUN_USER"
_KEYS = ("db", "user")


@dataclass(frozen=True)
class UserConfig:
    """What the config file says; None where it says nothing."""

    path: Path
    db: str | None = None
    user: str | None = None


def config_path(home: Path) -> Path:
    """Where the config file is looked for."""
    configured = os.environ.get(CONFIG_VARIABLE)
    return Path(configured).expanduser() if configured else home / "config.yaml"


def load_user_config(home: Path) -> UserConfig:
    """The config file's settings; no file is no settings. A malformed file is refused, naming the file and the key."""
    path = config_path(home)
    if not path.exists():
        if os.environ.get(CONFIG_VARIABLE):
            raise SpecError(f"{CONFIG_VARIABLE}: {path} does not exist")
        return UserConfig(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SpecError(f"{path}: not readable ({error.strerror or error})") from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as error:  # PyYAML's scalar constructors raise Python's errors
        # The problem and its line, not PyYAML's own text: that quotes the line, which may hold a database password.
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise SpecError(f"{path}: {where}not readable as YAML ({problem})") from None
    if loaded is None:
        return UserConfig(path)
    if not isinstance(loaded, dict):
        raise SpecError(f"{path}: expected a mapping with keys {', '.join(_KEYS)}; got {type(loaded).__name__}")
    unknown = sorted(set(map(str, loaded)) - set(_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r}; expected {', '.join(_KEYS)}")
    for key, value in loaded.items():
        if not isinstance(value, str) or not value.strip():  # the value itself is not shown: it may hold a database password
            got = "an empty string" if isinstance(value, str) else f"a {type(value).__name__}"
            raise SpecError(f"{path}: {key}: expected a non-empty string; got {got}")
    return UserConfig(path, db=loaded.get("db"), user=loaded.get("user"))


def current_user(home: Path) -> str:
    """Who is launching jobs: ``$SPOTRUN_USER`` (CI runners, shared accounts), else the config's ``user``, else the login name."""
    return os.environ.get(USER_VARIABLE) or load_user_config(home).user or getpass.getuser()
