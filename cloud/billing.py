"""What an instance interval costs.

Per-second billing at the interval's price. The cloud-specific rules (on-demand minimums,
spot interruptions refunded within the first hour, price changes mid-interval) arrive with the
cost ledger; every caller already goes through this one function.
"""

from __future__ import annotations


def interval_cost_usd(price_usd_per_hour: float, start: float, end: float) -> float:
    """Cost of running from ``start`` to ``end`` (unix seconds) at ``price_usd_per_hour``."""
    return max(0.0, end - start) * price_usd_per_hour / 3600.0
