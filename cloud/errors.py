"""Errors raised by providers."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider could not do what was asked; the message says what and why."""

    exit_code = 1


class CapacityError(ProviderError):
    """No capacity for an offer right now: try the next offer."""


class InstanceNotFoundError(ProviderError):
    """The provider has no instance with that id."""


class TerraformError(ProviderError):
    """The terraform CLI is missing or one of its commands failed; the message carries Terraform's own."""
