"""Provider tests use the local-instance fixtures shared with the controller tests (tests/support/local_instances.py)."""

from local_instances import fake_agent, home, make_provider, wait_until  # noqa: F401  (pytest finds fixtures by name here)
