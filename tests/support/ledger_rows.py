"""Ledger rows written through the real StateStore, with costs chosen by hand so reports can be checked to the cent."""

from __future__ import annotations

from datetime import UTC, datetime

from specs import unchecked_spec

from runner.state.store import Interval, Outcome, StateStore


def at(text: str) -> float:
    """Unix time of an ISO UTC moment, e.g. at("2026-03-10T22:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def add_interval(
    store: StateStore,
    job: str,
    attempt: int,
    start: float,
    end: float | None,
    *,
    cost_usd: float = 0.0,
    on_demand_usd: float = 0.0,
    price: float = 0.5,
    on_demand_price: float = 1.5,
    market: str = "spot",
    provider: str = "aws",
    instance_type: str = "g5.xlarge",
    zone: str = "us-east-1a",
    gpus: int = 1,
    team: str | None = None,
    tags: dict[str, str] | None = None,
    launched_by: str = "",
    outcome: Outcome = Outcome.FINISHED,
    work_lost_s: float | None = None,
    productive_at: float | None = None,
    requested_at: float | None = None,
) -> None:
    """Open an interval as the controller does at launch and, with ``end``, close it at the given cost."""
    if not any(existing.name == job for existing in store.jobs()):
        store.create_job(unchecked_spec(job), spec_path=f"{job}.yaml", checkpoint_url=f"file:///tmp/{job}")
    store.set_launched(
        Interval(
            job=job,
            attempt=attempt,
            node=0,
            instance_id=f"i-{job[:8]}{attempt:04d}",
            provider=provider,
            instance_type=instance_type,
            zone=zone,
            market=market,
            gpus=gpus,
            price_usd_per_hour=price,
            on_demand_price_usd_per_hour=on_demand_price,
            requested_at=start if requested_at is None else requested_at,
            start=start,
            end=None,
            end_reason=None,
            outcome=None,
            cost_usd=None,
            on_demand_usd=None,
            prices=((start, price),),
            productive_at=None,
            work_lost_s=None,
            steps_lost=None,
            team=team,
            tags=tags or {},
            launched_by=launched_by,
        )
    )
    if productive_at is not None:
        store.set_productive(job, attempt, productive_at)
    if end is not None:
        store.close_interval(
            job,
            attempt,
            end=end,
            end_reason="spot-interruption" if outcome is Outcome.PREEMPTED else "exited",
            outcome=outcome,
            cost_usd=cost_usd,
            on_demand_usd=on_demand_usd,
            prices=((start, price),),
            work_lost_s=work_lost_s,
            steps_lost=None,
        )
