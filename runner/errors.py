"""Errors spotrun explains to its user: the CLI prints the message on one line and exits with ``exit_code``."""

from __future__ import annotations


class SpotrunError(Exception):
    """A known failure with a message a user can act on."""

    exit_code = 1


class SpecError(SpotrunError):
    """The job spec (or another user input) is invalid; nothing has been launched or written."""

    exit_code = 2


class JobNotFoundError(SpotrunError):
    """No job of that name in the state store."""

    exit_code = 2


class JobStateError(SpotrunError):
    """The job exists but is in a state that does not allow the request."""

    exit_code = 2


class BudgetError(SpotrunError):
    """The forecast cost to finish exceeds the budget, or a new budget does not cover what was already spent."""

    exit_code = 2


class DatabaseError(SpotrunError):
    """The state database cannot be used: unreachable, refused the credentials, or at a schema this spotrun cannot use."""

    exit_code = 2


class LeaseLostError(SpotrunError):
    """Another controller took the job's lease from this one (which stalled past it): this one must not act on the job."""

    exit_code = 2
