"""Human durations ("90s", "5m", "2h") used across spec, CLI and callback."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; a bare number means seconds. Raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90s, 5m or 2h, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 90s, 5m or 2h, got {value!r}")
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[unit or "s"]


def format_duration(seconds: float) -> str:
    """Short form for people: 45s, 3m20s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
