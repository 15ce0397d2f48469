"""Errors raised by the checkpoint store and callback."""

from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint could not be written, found or read; the message names the URL."""

    exit_code = 1
