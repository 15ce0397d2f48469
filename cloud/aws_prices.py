"""On-demand prices of EC2 instance types: the Pricing API when it answers, a shipped table when it does not.

The Pricing API is the source of truth but is reachable only from some regions' endpoints and
often blocked by IAM policies; the table keeps offers (and savings figures) meaningful without it,
and says how old it is so nobody mistakes it for today's price.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

TABLE_DATE = "2025-06-01"
TABLE_REGION = "us-east-1"
# Linux, shared tenancy, USD per hour in us-east-1 as published on TABLE_DATE.
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6.4xlarge": 1.3232,
    "g6.12xlarge": 4.6016,
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.24208,
    "g6e.12xlarge": 10.49264,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p4d.24xlarge": 32.7726,
    "p5.48xlarge": 55.04,
}


class OnDemandPrices:
    """Looks each instance type up once per process: the Pricing API first, then the table."""

    def __init__(self, region: str, pricing_client: Callable[[], Any]) -> None:
        self.region = region
        self._pricing_client = pricing_client
        self._cache: dict[str, float] = {}

    def usd_per_hour(self, instance_type: str) -> float:
        """The on-demand price; raises KeyError when neither the API nor the table knows the type."""
        if instance_type not in self._cache:
            price = self._from_api(instance_type)
            if price is None:
                price = ON_DEMAND_USD_PER_HOUR[instance_type]
                if self.region != TABLE_REGION:
                    log.warning(
                        "on-demand price of %s is the %s table price of %s; %s may differ",
                        instance_type,
                        TABLE_REGION,
                        TABLE_DATE,
                        self.region,
                    )
            self._cache[instance_type] = price
        return self._cache[instance_type]

    def _from_api(self, instance_type: str) -> float | None:
        filters = {
            "instanceType": instance_type,
            "regionCode": self.region,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
        }
        try:
            response = self._pricing_client().get_products(
                ServiceCode="AmazonEC2",
                Filters=[{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in filters.items()],
                MaxResults=10,
            )
        except (BotoCoreError, ClientError) as error:
            log.info("Pricing API unavailable for %s (%s); using the table of %s", instance_type, error, TABLE_DATE)
            return None
        for document in response.get("PriceList", []):
            price = _usd_per_hour(json.loads(document) if isinstance(document, str) else document)
            if price is not None:
                return price
        return None


def _usd_per_hour(product: dict[str, Any]) -> float | None:
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is not None and float(usd) > 0:
                return float(usd)
    return None
