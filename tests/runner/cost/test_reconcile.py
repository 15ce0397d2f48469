"""The ledger against Cost Explorer: moto's real HTTP endpoint, seeded over its API; ledger rows through the real StateStore.

moto answers each distinct request body from a queue and then repeats that answer for the same body,
so every test asks for its own period.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from cost_explorer import ce_day, ce_page, seed_cost_explorer
from ledger_rows import add_interval, at

from cloud.errors import ProviderError
from runner.cost.reconcile import cost_explorer_spend, reconcile, render_reconcile_csv, render_reconcile_table
from runner.state.database import default_database_url
from runner.state.store import StateStore


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(default_database_url(tmp_path))


def test_differences_per_job_across_pages_and_jobs_on_one_side_only(moto_endpoint: str, store: StateStore) -> None:
    # alpha: 23:00-03:00 across the period's first midnight ($4, 3 h of it inside: $3) and $1 more; beta: $1, not in CE yet
    add_interval(store, "alpha", 1, at("2025-01-31T23:00"), at("2025-02-01T03:00"), cost_usd=4.0, on_demand_usd=12.0)
    add_interval(store, "alpha", 2, at("2025-02-02T01:00"), at("2025-02-02T02:00"), cost_usd=1.0, on_demand_usd=3.0)
    add_interval(store, "beta", 1, at("2025-02-02T05:00"), at("2025-02-02T06:00"), cost_usd=1.0, on_demand_usd=3.0)
    add_interval(store, "gamma", 1, at("2025-02-01T05:00"), at("2025-02-01T06:00"), cost_usd=9.0, on_demand_usd=9.0, provider="local")
    seed_cost_explorer(
        moto_endpoint,
        ce_page(ce_day("2025-02-01", {"alpha": 3.10, "": 5.0}), next_token="page-2"),
        ce_page(ce_day("2025-02-02", {"alpha": 1.10, "other-store": 2.5, "": 2.0}, estimated=True)),
    )
    now, since = at("2025-02-02T12:00"), at("2025-02-01T06:00")

    result = reconcile(store.intervals(), now=now, since=since)

    assert (result.start_day, result.end_day) == ("2025-02-01", "2025-02-03")
    assert [row.job for row in result.rows] == ["alpha", "beta", "other-store"]
    alpha, beta, other = result.rows
    assert (alpha.ledger_usd, alpha.cost_explorer_usd, alpha.difference_usd) == pytest.approx((4.0, 4.2, 0.2))
    assert alpha.difference_pct == pytest.approx(5.0) and alpha.seen_in == "both"
    assert (beta.ledger_usd, beta.cost_explorer_usd, beta.difference_pct, beta.seen_in) == pytest.approx((1.0, 0.0, -100.0, "ledger only"))
    assert (other.ledger_usd, other.cost_explorer_usd, other.difference_pct, other.seen_in) == (
        0.0,
        pytest.approx(2.5),
        None,
        "Cost Explorer only",
    )
    assert result.untagged_usd == pytest.approx(7.0) and result.estimated
    assert any("lags up to 24 h" in note for note in result.notes)
    document = result.to_json()
    assert document["totals"] == {"ledger_usd": 5.0, "cost_explorer_usd": 6.7, "difference_usd": 1.7}
    assert render_reconcile_csv(result).splitlines()[1:] == [
        "alpha,4.0,4.2,0.2,5.0,both",
        "beta,1.0,0.0,-1.0,-100.0,ledger only",
        "other-store,0.0,2.5,2.5,,Cost Explorer only",
    ]
    assert render_reconcile_table(result).row_count == 4

    # the same request again (moto repeats its answers): one job only
    only_alpha = reconcile(store.intervals(), now=now, since=since, job="alpha")
    assert [(row.job, row.cost_explorer_usd) for row in only_alpha.rows] == [("alpha", pytest.approx(4.2))]


def test_spend_with_no_job_tag_says_to_activate_the_tag(moto_endpoint: str, store: StateStore) -> None:
    add_interval(store, "alpha", 1, at("2025-03-01T01:00"), at("2025-03-01T02:00"), cost_usd=1.0, on_demand_usd=3.0)
    seed_cost_explorer(moto_endpoint, ce_page(ce_day("2025-03-01", {"": 12.0})))

    with pytest.raises(ProviderError) as raised:
        reconcile(store.intervals(), now=at("2025-03-01T12:00"))

    message = str(raised.value)
    assert "\n" not in message
    assert "activate the spotrun:job cost allocation tag in the Billing console" in message and "lags up to 24 h" in message


def test_nothing_on_either_side_is_an_empty_comparison(moto_endpoint: str, store: StateStore) -> None:
    result = reconcile(store.intervals(), now=at("2025-04-10T12:00"))  # moto, unseeded for this period, answers no data

    assert result.rows == () and result.start_day == "2025-03-11"


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        ("AccessDeniedException", "it needs ce:GetCostAndUsage"),
        ("DataUnavailableException", "no Cost Explorer data for 2025-05-01..2025-05-02 yet: Cost Explorer data lags up to 24 h"),
        ("LimitExceededException", "try again in a minute"),
        ("SomethingNew", "SomethingNew (it went wrong)"),
    ],
)
def test_aws_errors_become_one_line_the_user_can_act_on(code: str, advice: str) -> None:
    client = boto3.client("ce", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    with Stubber(client) as stub:
        stub.add_client_error("get_cost_and_usage", service_error_code=code, service_message="it went wrong", http_status_code=400)

        with pytest.raises(ProviderError) as raised:
            cost_explorer_spend(client, "2025-05-01", "2025-05-02")

    assert advice in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"Cost Explorer: {code}")


def test_a_page_token_seen_twice_stops_the_loop() -> None:
    client = boto3.client("ce", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_response("get_cost_and_usage", {"ResultsByTime": [], "NextPageToken": "same"})

        with pytest.raises(ProviderError, match="page token 'same' twice"):
            cost_explorer_spend(client, "2025-05-01", "2025-05-02")
