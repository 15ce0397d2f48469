"""Launch tokens: how the token of one attempt names the launch of every node of its gang.

A token is an idempotency key: it names one launch request with one set of parameters, so a
controller restarted mid-launch asks again with the same token and gets the same instance back
(EC2's ClientToken and the ``spotrun:token`` tag; the local provider's instance id). The
controller gives every attempt a token, and a new one per offer it moves to when an offer has no
capacity (``<job>-<created>-<attempt>``, then ``...-<attempt>-<tried>``): every attempt token
ends in a number. Rank 0 is launched under the attempt's token, node K of a gang under
``<token>-n<K>``.

Both directions live here because two parts must agree on them: the controller, which launches
the nodes, and ``spotrun gc``, which must recognise every node of a live attempt (launched, or
mid-launch and known only by its token) whatever the size of the gang.
"""

from __future__ import annotations

import re

# A node's suffix; an attempt token ends in a number, never in "-n<number>", so stripping it is unambiguous.
_NODE_SUFFIX = re.compile(r"-n[1-9][0-9]*$")


def node_token(attempt_token: str, node: int) -> str:
    """The token node ``node`` of an attempt is launched under: the attempt's own for rank 0."""
    if node < 0:
        raise ValueError(f"a node's rank is 0 or more, got {node}")
    return attempt_token if node == 0 else f"{attempt_token}-n{node}"


def attempt_token_of(token: str) -> str:
    """The token of the attempt a launch token belongs to: ``token`` itself for rank 0 (or a single instance)."""
    return _NODE_SUFFIX.sub("", token)
