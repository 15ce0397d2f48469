"""Fixtures for provider and controller tests: real processes, real signals, real HTTP on 127.0.0.1, and no leftovers."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud.local import LocalProvider
from cloud.local_files import instances_dir

FAKE_AGENT_SCRIPT = Path(__file__).parent / "fake_agent.py"


def _wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(predicate, timeout_s, what)``: the first truthy value, or a failure naming ``what`` at the deadline."""
    return _wait_until


@dataclass(frozen=True)
class FakeAgent:
    """One fake agent's command line and what it recorded (see fake_agent.py)."""

    out: Path

    def command(self, *options: str) -> tuple[str, ...]:
        return (sys.executable, str(FAKE_AGENT_SCRIPT), str(self.out), *options)

    def events(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((event for event in self.events() if event["event"] == name), None)

    def wait_for(self, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        return _wait_until(lambda: self.event(name), timeout_s, f"the fake agent to record {name!r}")


@pytest.fixture
def fake_agent(tmp_path: Path) -> Callable[[str], FakeAgent]:
    """``fake_agent(name)``: a fake agent writing its events under this test's tmp_path."""
    return lambda name: FakeAgent(tmp_path / f"{name}.jsonl")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A spotrun home; every local instance still running in it at the end of the test is terminated."""
    home = tmp_path / "home"
    yield home
    if instances_dir(home).exists():
        cleaner = LocalProvider(home, preempt_every_s=0, notice_s=0, seed=0, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0)
        cleaner.terminate([path.name for path in instances_dir(home).iterdir()])


@pytest.fixture
def make_provider(home: Path) -> Callable[..., LocalProvider]:
    """``make_provider(**overrides)``: a LocalProvider on this test's home, never interrupting unless told."""

    def make(**overrides: Any) -> LocalProvider:
        settings: dict[str, Any] = {
            "preempt_every_s": 0.0,
            "notice_s": 1.0,
            "seed": 0,
            "spot_price_usd_per_hour": 0.3,
            "on_demand_price_usd_per_hour": 1.0,
        }
        settings.update(overrides)
        return LocalProvider(home, **settings)

    return make
