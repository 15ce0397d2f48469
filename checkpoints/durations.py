"""Human durations ("90s", "5m", "2h") used across spec, CLI and callback.

Text a person writes needs its unit: ``5`` could mean seconds or minutes, so a bare number is
refused, except ``0``, which is the same in every unit. A number given by code (or read back from
a stored spec's ``*_s`` field) is seconds. Every duration is finite, not negative, and at most
``MAX_DURATION_S``, so a time computed from one (now + deadline, say) stays a time.
"""

from __future__ import annotations

import math
import re

# Ten years: longer than any job, deadline, cost window or trace; beyond it a duration is a typo, and
# ``99999999999d`` would overflow datetime arithmetic.
MAX_DURATION_S = 10 * 365 * 86400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)
_FORMS = "a duration such as 90s, 5m or 2h"


class DurationError(ValueError):
    """A value that is not a duration; ``expected`` says what would have been, without the value (callers show it their way)."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(f"{expected}, got {value!r}")
        self.expected = expected


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: text with its unit (only ``0`` may go without), or a number of seconds. Raises DurationError."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError(f"expected {_FORMS}", value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise DurationError(f"expected {_FORMS}", value)
        number, unit = match.groups()
        if unit is None and float(number) != 0:
            raise DurationError(f"expected {_FORMS}: a number without its unit could mean seconds or minutes", value)
        seconds = float(number) * _UNIT_SECONDS[unit or "s"]
    else:
        seconds = value
    if isinstance(seconds, float) and math.isnan(seconds):
        raise DurationError(f"expected {_FORMS}", value)
    if seconds < 0:
        raise DurationError("expected a duration of zero or more", value)
    if seconds > MAX_DURATION_S:  # compared before float(): an int too large for a float is refused, not an OverflowError
        raise DurationError(f"expected a duration of at most {MAX_DURATION_S / 86400:.0f}d", value)
    return float(seconds)


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
