"""Shared fixtures: where the real AstroPix4 run is, and hypothesis profiles."""

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

REALDATA_RUN = "astropix4-threshold-scan-20250723"


def find_realdata() -> Path:
    """The shared real-data folder: $APX_HIL_REALDATA, else a ``shared/realdata`` beside one of
    the checkout's ancestors, else /work/shared/realdata."""
    env = os.environ.get("APX_HIL_REALDATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [parent / "shared" / "realdata" for parent in here.parents]
    candidates.append(Path("/work/shared/realdata"))
    for candidate in candidates:
        if (candidate / REALDATA_RUN).is_dir():
            return candidate
    pytest.fail("the real AstroPix4 run was not found: set APX_HIL_REALDATA to the folder "
                f"holding {REALDATA_RUN}/ (looked in {[str(c) for c in candidates]})")


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
