"""Which spotrun instances cost money for nothing: the rule behind `spotrun gc`.

An instance is needed only while it is the instance of a live job's open attempt (known by its
id, or by its launch token when the controller has not recorded the id yet). Everything else that
carries spotrun's tags is an orphan: left behind by a controller that died mid-launch, by a
terminate call that never arrived, or by a store that was deleted. Untagged instances are never
considered: they are not spotrun's to touch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloud.aws import TaggedInstance
from cloud.provider import TAG_TOKEN
from runner.store import StateStore


@dataclass(frozen=True)
class Needed:
    """What the store says is in use: instance ids and launch tokens of live jobs' open attempts."""

    instance_ids: frozenset[str]
    tokens: frozenset[str]


def needed_by(store: StateStore) -> Needed:
    """The open attempts of every job that is not final."""
    ids, tokens = set(), set()
    for job in store.jobs():
        if job.state.is_final:
            continue
        for attempt in store.attempts(job.name):
            if attempt.is_open:
                tokens.add(attempt.token)
                if attempt.instance_id:
                    ids.add(attempt.instance_id)
    return Needed(frozenset(ids), frozenset(tokens))


def orphans(instances: Iterable[TaggedInstance], needed: Needed, *, store_id: str, all_stores: bool) -> list[TaggedInstance]:
    """Tagged instances nobody needs: this store's only, unless ``all_stores`` (safe when the team shares one store)."""
    return [
        instance
        for instance in instances
        if (all_stores or instance.store == store_id)
        and instance.instance_id not in needed.instance_ids
        and instance.tags.get(TAG_TOKEN) not in needed.tokens
    ]
