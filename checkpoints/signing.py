"""Who wrote an object under a job's prefix: an HMAC with the job's own key.

Every instance can write the whole bucket (one instance role for all jobs), so the bytes of
another job's heartbeat, stop request, spec or checkpoint manifest could come from anyone. The
controller makes one random key per job and hands it only to that job's instances (in the
launch: an instance tag on EC2, which only that instance reads through its metadata, or the
agent's environment locally). What carries a valid MAC under that key was written by the
controller or by one of the job's own instances; anything else is ignored as forged.

The MAC covers a canonical JSON form of the payload (sorted keys, no spaces) and a purpose
string, so a signed heartbeat can never be replayed as a signed stop request or manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

KEY_ENV = "SPOTRUN_JOB_KEY"  # hex; set for the agent and the training process it starts
MAC_FIELD = "mac"


def new_key() -> str:
    """A fresh random job key, hex (256 bits)."""
    return secrets.token_hex(32)


def key_from_environment() -> bytes | None:
    """This process's job key, or None where the job has none (tests, a user calling the callback outside spotrun)."""
    value = os.environ.get(KEY_ENV)
    return bytes.fromhex(value) if value else None


def canonical(payload: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: ``payload`` without its MAC, as sorted compact JSON."""
    body = {key: value for key, value in payload.items() if key != MAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()  # NaN allowed: a diverged loss is reported too


def mac(key: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """Hex HMAC-SHA256 of ``payload`` (its MAC field left out) for ``purpose``."""
    return hmac.new(key, purpose.encode() + b"\0" + canonical(payload), hashlib.sha256).hexdigest()


def signed(key: bytes, purpose: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its MAC added."""
    return {**payload, MAC_FIELD: mac(key, purpose, payload)}


def is_authentic(key: bytes, purpose: str, payload: Any) -> bool:
    """Whether ``payload`` is a JSON object carrying a valid MAC for ``purpose`` under ``key``."""
    if not isinstance(payload, dict) or not isinstance(payload.get(MAC_FIELD), str):
        return False
    try:
        expected = mac(key, purpose, payload)
    except (TypeError, ValueError, RecursionError):  # not JSON we could have signed
        return False
    return hmac.compare_digest(expected, payload[MAC_FIELD])
