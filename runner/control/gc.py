"""Which spotrun instances cost money for nothing: the rule behind `spotrun gc`.

An instance is needed only while it is an instance of a live job's open attempt: any node of its
gang, known by the instance id in its ledger row, or by its launch token when the controller has
not recorded the instance yet (mid-launch, or a controller that died between the launch and the
store). Every node's token derives from the attempt's (``cloud.launch_tokens``), so the attempt's
token alone covers a gang of any size, and the token an attempt was retargeted to covers the
nodes of the offer it moved to. Everything else that carries spotrun's tags is an orphan: left
behind by a controller that died mid-launch, by a terminate call that never arrived, or by a
store that was deleted. Untagged instances are never considered: they are not spotrun's to touch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloud.aws import AwsProvider, TaggedInstance
from cloud.launch_tokens import attempt_token_of
from cloud.provider import TAG_TOKEN
from runner.state.store import StateStore


@dataclass(frozen=True)
class Needed:
    """What the store says is in use: instance ids, and attempt tokens, of live jobs' open attempts."""

    instance_ids: frozenset[str]
    attempt_tokens: frozenset[str]

    def needs(self, instance: TaggedInstance) -> bool:
        """Whether ``instance`` is a node of one of these attempts, by its id or by the attempt its launch token belongs to."""
        token = instance.tags.get(TAG_TOKEN)
        return instance.instance_id in self.instance_ids or (token is not None and attempt_token_of(token) in self.attempt_tokens)


def needed_by(store: StateStore) -> Needed:
    """The open attempts of every job that is not final: each attempt's token and every node's instance id."""
    ids: set[str] = set()
    tokens: set[str] = set()
    for job in store.live_jobs():
        open_attempts = {attempt.number: attempt for attempt in store.attempts(job.name) if attempt.is_open}
        if not open_attempts:
            continue
        for attempt in open_attempts.values():
            tokens.add(attempt.token)
            if attempt.instance_id:
                ids.add(attempt.instance_id)
        # One ledger row per node launched (rank 0's id is also the attempt's).
        ids.update(row.instance_id for row in store.intervals(job.name) if row.attempt in open_attempts)
    return Needed(frozenset(ids), frozenset(tokens))


def orphans(instances: Iterable[TaggedInstance], needed: Needed, *, store_id: str, all_stores: bool) -> list[TaggedInstance]:
    """Tagged instances nobody needs: this store's only, unless ``all_stores`` (safe when the team shares one store)."""
    return [instance for instance in instances if (all_stores or instance.store == store_id) and not needed.needs(instance)]


def find_orphans(provider: AwsProvider, store: StateStore, *, all_stores: bool) -> list[TaggedInstance]:
    """The orphans among the provider's tagged instances now.

    The instances are listed before the store is read: an instance launched in between is then
    either not listed, or listed with its attempt already recorded (the controller records an
    attempt, token included, before it launches). Read the other way round, a gang launched
    between the two looks like orphans and would be terminated.
    """
    instances = provider.tagged_instances()
    return orphans(instances, needed_by(store), store_id=provider.settings.store_id, all_stores=all_stores)
