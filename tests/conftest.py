"""Shared test setup: no test may reach real AWS, whatever the developer's shell holds."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope="session")
def _offline_aws_environment():
    saved = {k: os.environ.get(k) for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-west-2")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    yield
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


#: Every test is one of these kinds (pyproject.toml's markers): `make unit`, `make integration` and
#: `make e2e` select by marker, so a test without one would run in none of them.
KINDS = ("unit", "integration", "e2e", "bench")


def pytest_collection_modifyitems(config, items):
    """End-to-end tests run last: they share one sandbox for the whole session (tests/e2e/
    conftest.py), and a process holds one sandbox at a time, so the other modules' sandboxes must
    all have come and gone before it starts. (``make test`` runs them in a pytest run of their own,
    after the others, whose workers take whole files: ``--dist loadfile``.)"""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(k) for k in KINDS)]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} tests have none of the markers {', '.join(KINDS)} (first: {unmarked[0]}); "
            "give the module a `pytestmark = pytest.mark.unit` (or integration, e2e, bench)"
        )
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
