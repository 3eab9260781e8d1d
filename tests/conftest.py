"""Shared fixtures: the project's own test data (``fixtures/``), the real AstroPix4 run, and
hypothesis profiles.

Most tests use the small project-made files in ``fixtures/`` (see fixtures/make_fixtures.py)
and run anywhere. Tests of the real AstroPix4 run read it from ``$APX_HIL_REALDATA`` or, beside
the checkout, ``../shared/realdata``; without it they skip, saying where the run comes from,
except when ``APX_HIL_REQUIRE_REALDATA=1`` (CI sets it): then a missing run fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI runs more examples; a developer's default run stays quick.
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPOSITORY = Path(__file__).resolve().parent.parent
FIXTURES = REPOSITORY / "fixtures"
REALDATA_RUN = "astropix4-threshold-scan-20250723"


def realdata_candidates() -> list[Path]:
    """Where the real run may be: ``$APX_HIL_REALDATA``, then ``../shared/realdata`` relative to
    the repository root. Nothing else: a test run must not depend on this machine's layout."""
    env = os.environ.get("APX_HIL_REALDATA")
    return ([Path(env)] if env else []) + [REPOSITORY.parent / "shared" / "realdata"]


def find_realdata() -> Path:
    """The folder holding the real run; skips the test if there is none (fails if
    ``APX_HIL_REQUIRE_REALDATA=1``)."""
    candidates = realdata_candidates()
    for candidate in candidates:
        if (candidate / REALDATA_RUN).is_dir():
            return candidate
    reason = (f"the real AstroPix4 run {REALDATA_RUN}/ is not here: it is not part of the "
              f"repository; set APX_HIL_REALDATA to the folder holding it, or put it in "
              f"../shared/realdata beside the checkout (looked in "
              f"{', '.join(str(c) for c in candidates)})")
    if os.environ.get("APX_HIL_REQUIRE_REALDATA") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of the real run: ``.apx``, reference ``.csv``, chip config, DAQ log."""
    return find_realdata() / REALDATA_RUN


@pytest.fixture(scope="session")
def real_apx(realdata: Path) -> Path:
    return realdata / "20250723_092534_data.apx"


@pytest.fixture(scope="session")
def real_csv(realdata: Path) -> Path:
    return realdata / "20250723_092534_data.csv"


@pytest.fixture(scope="session")
def emulated_run() -> Path:
    """A small emulated run with every anomaly (fixtures/emulated_run.apx)."""
    return FIXTURES / "emulated_run.apx"


@pytest.fixture(scope="session")
def emulated_truth() -> Path:
    """The emulator's truth of :func:`emulated_run`: the hits it generated (CSV)."""
    return FIXTURES / "emulated_truth.csv"


@pytest.fixture(scope="session")
def legacy_log() -> Path:
    """The readouts of :func:`emulated_run` as a legacy ``.log``."""
    return FIXTURES / "legacy.log"


@pytest.fixture(scope="session")
def edge_cases_apx() -> Path:
    """Hand-built edge-case readouts (fixtures/make_fixtures.py EDGE_CASES)."""
    return FIXTURES / "edge_cases.apx"


@pytest.fixture(scope="session")
def chip_config() -> Path:
    """A v4 chip configuration YAML in the team's format, written for the tests."""
    return FIXTURES / "config_v4.yml"
