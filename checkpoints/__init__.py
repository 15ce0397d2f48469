"""The training side of spotrun: checkpoints to object storage that resume exactly.

Usable without the rest of spotrun::

    Trainer(callbacks=[SpotCheckpoint("s3://bucket/run1", every="5m", keep=3)])

``SpotCheckpoint`` pulls in Lightning and ``CheckpointStore`` fsspec and aiohttp, so both are
imported when first used: importing a light submodule (``checkpoints.durations``, ``.errors``)
costs the command line nothing, and ``checkpoints.store`` stays light for the controller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checkpoints.callback import SpotCheckpoint
    from checkpoints.store import CheckpointInfo, CheckpointStore

__all__ = ["CheckpointInfo", "CheckpointStore", "SpotCheckpoint", "latest", "spotrun_checkpoint"]


def latest(url: str) -> CheckpointInfo | None:
    """The newest committed checkpoint under ``url`` whose objects match its manifest (sha256 included).

    Inside a spotrun job (``SPOTRUN_JOB_KEY`` set) only manifests signed with the job's key count.
    """
    from checkpoints.signing import key_from_environment
    from checkpoints.store import CheckpointStore

    return CheckpointStore(url, key=key_from_environment()).latest(check_sha256=True)


def spotrun_checkpoint(**overrides: Any) -> SpotCheckpoint:
    """The callback configured by the spotrun agent's environment (command mode); keyword arguments override it."""
    from checkpoints.settings import callback_from_environment

    return callback_from_environment(**overrides)


def __getattr__(name: str) -> Any:
    if name == "SpotCheckpoint":
        from checkpoints.callback import SpotCheckpoint

        return SpotCheckpoint
    if name in ("CheckpointInfo", "CheckpointStore"):
        from checkpoints import store

        return getattr(store, name)
    raise AttributeError(f"module 'checkpoints' has no attribute {name!r}")
