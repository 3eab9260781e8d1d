"""The project-made fixtures (``fixtures/``) are what their script makes, and usable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from astropix_hil.cli.daq import read_config

from .conftest import FIXTURES

MADE = ("emulated_run.apx", "emulated_truth.csv", "legacy.log", "edge_cases.apx")


def test_make_fixtures_reproduces_the_committed_files(tmp_path):
    """The committed outputs are exactly what fixtures/make_fixtures.py writes (rerun it and
    commit the outputs when the emulator's output changes on purpose)."""
    subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), str(tmp_path)],
                   check=True, capture_output=True)
    for name in MADE:
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name


@pytest.mark.parametrize("name", [*MADE, "config_v4.yml"])
def test_fixtures_stay_small(name):
    assert (FIXTURES / name).stat().st_size < 64 * 1024


def test_the_chip_configuration_follows_the_v4_schema(chip_config):
    """852 bits in the main register (74 digital, 6 bias, 19 x 6 current DACs, 5 x 10 voltage
    DACs, 16 x 38 columns), each [bits, value] fitting its width, 13 TDAC rows."""
    chip = read_config(chip_config)["astropix4"]
    config = chip["config"]
    assert list(config) == ["digitalconfig", "biasconfig", "idacs", "vdacs", "recconfig"]
    widths = {group: sum(bits for bits, _ in fields.values())
              for group, fields in config.items()}
    assert widths == {"digitalconfig": 74, "biasconfig": 6, "idacs": 114, "vdacs": 50,
                      "recconfig": 16 * 38}
    for fields in config.values():
        for bits, value in fields.values():
            assert 0 <= value < 1 << bits
    assert chip["geometry"] == {"cols": 16, "rows": 35}
    assert len(chip["configcards"]["voltagecard"]["dacs"]) == 8
    assert [bits for bits, _ in chip["tdac_config"].values()] == [80] * 13
    col9 = config["recconfig"]["col9"][1]
    assert col9 >> 36 & 1 and not col9 >> 1 & 1  # injection into column 9, row 0 enabled
