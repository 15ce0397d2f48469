"""Seed moto's Cost Explorer over HTTP: get_cost_and_usage answers from a queue of results, one per distinct request."""

from __future__ import annotations

import json
import urllib.request
from datetime import date, timedelta
from typing import Any


def ce_day(day: str, spend_by_job: dict[str, float], *, estimated: bool = False) -> dict[str, Any]:
    """One DAILY result grouped by the spotrun:job tag; the job "" is the untagged group."""
    end = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    groups = [
        {"Keys": [f"spotrun:job${job}"], "Metrics": {"UnblendedCost": {"Amount": f"{usd:.10f}", "Unit": "USD"}}}
        for job, usd in spend_by_job.items()
    ]
    return {"TimePeriod": {"Start": day, "End": end}, "Total": {}, "Groups": groups, "Estimated": estimated}


def ce_page(*days: dict[str, Any], next_token: str | None = None) -> dict[str, Any]:
    """One page of a get_cost_and_usage answer."""
    page: dict[str, Any] = {"ResultsByTime": list(days), "DimensionValueAttributes": []}
    if next_token is not None:
        page["NextPageToken"] = next_token
    return page


def seed_cost_explorer(endpoint: str, *pages: dict[str, Any]) -> None:
    """Queue ``pages``: each new distinct request (a next page has its token in it) takes the next one."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": list(pages)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1, whatever the proxy settings
    with opener.open(request, timeout=10) as response:
        if response.status != 201:
            raise AssertionError(f"moto refused the Cost Explorer results: HTTP {response.status}")
