"""A job's mailbox: the JSON objects under its checkpoint prefix's ``_spotrun/`` folder.

Object storage is the only channel between a job's controller and its instances, and the prefix
the job owns is where that channel lives: the spec the job runs (``job.json``), who owns the
prefix (``owner.json``), heartbeats, stop requests, spending horizons, and the attempts' logs.
What the messages mean is ``runner.instance.protocol``'s; this is only where and how they are kept.

Writes replace an object whole (a temporary name, then a move), so a reader sees all of one or
none; reads and writes go through the checkpoint store's one door to storage
(``CheckpointStore._io``), so transient errors are retried and what still fails is a
``CheckpointError`` naming the object. An object that is not a readable JSON object reads as
absent, with a warning: spotrun did not write it. ``create``, ``exists`` and ``remove`` (the
prefix claim's) call the filesystem directly, once.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from checkpoints.store import SPOTRUN_DIR, CheckpointStore

log = logging.getLogger(__name__)


class Mailbox:
    """The ``_spotrun/`` objects of one checkpoint prefix, by name (``heartbeat.json``, ``logs/attempt-0001.log``)."""

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store

    @classmethod
    def at(cls, url: str) -> Mailbox:
        """The mailbox of the checkpoint prefix ``url``."""
        return cls(CheckpointStore(url))

    @property
    def url(self) -> str:
        """The checkpoint prefix the mailbox belongs to."""
        return self._store.url

    def url_of(self, name: str) -> str:
        """Where the object ``name`` lives, for messages."""
        return f"{self._store.url}/{SPOTRUN_DIR}/{name}"

    def read(self, name: str) -> dict[str, Any] | None:
        """The JSON object ``name``, or None when it is absent or not a JSON object (the store warns of that)."""
        try:
            return self._store.read_json(name)
        except RecursionError:  # JSON nested deeper than Python parses: anyone could have written it
            log.warning("ignoring %s: JSON nested too deep", self.url_of(name))
            return None

    def write(self, name: str, message: Mapping[str, Any]) -> None:
        """Replace the object ``name`` with the JSON object ``message``."""
        self._store.write_json(name, dict(message))

    def write_bytes(self, name: str, payload: bytes) -> None:
        """Replace the object ``name`` with ``payload`` (a log)."""
        self._store.write_bytes(name, payload)

    def create(self, name: str, message: Mapping[str, Any]) -> bool:
        """Write the JSON object ``message`` as ``name`` only if no object is there; False when one is (another writer won).

        S3 ``If-None-Match: *`` (s3fs ``mode="create"``), ``O_EXCL`` on a local disk. Called once, not
        through the retrying door: a create is not safe to repeat.
        """
        payload = json.dumps(dict(message)).encode()
        path = self._store.spotrun_path(name)
        fs = self._store.fs
        if isinstance(fs, LocalFileSystem):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
            return True
        try:
            fs.pipe_file(path, payload, mode="create")
        except FileExistsError:
            return False
        except OSError as error:  # s3fs maps some 412 answers to EINVAL
            if error.errno == errno.EINVAL and "precondition" in str(error).lower():
                return False
            raise
        return True

    def exists(self, name: str) -> bool:
        """Whether any object (readable or not) is at ``name``."""
        return bool(self._store.fs.exists(self._store.spotrun_path(name)))

    def remove(self, name: str) -> None:
        """Delete the object ``name``; FileNotFoundError when there is none."""
        self._store.fs.rm_file(self._store.spotrun_path(name))
