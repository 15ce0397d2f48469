"""How amounts of money are written in messages."""

from __future__ import annotations


def format_usd(amount: float) -> str:
    """A budget as the user gave it: cents, or the digits it has down to a hundredth of a cent (a $0.0177 budget is not $0.02)."""
    return f"${amount:.2f}" if round(amount, 2) == round(amount, 4) else f"${amount:.4f}"
