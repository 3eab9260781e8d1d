"""``apx-hil info --pixels``: a text hit map per chip, every pixel with hits marked."""

from __future__ import annotations

import numpy as np

from astropix_hil.cli import main
from astropix_hil.monitor.textmap import EMPTY, RAMP, text_hitmap

from .monitor_helpers import converted_hits, emulate, hitmap_from_csv


def test_info_pixels_marks_exactly_the_pixels_with_hits(tmp_path, capsys):
    run = emulate(tmp_path / "px.apx", "--seed", "2", "--mode", "poisson", "--rate", "300",
                  "--chips", "2", "--rows", "12", "--cols", "14", "--readouts", "200")
    assert main(["info", str(run), "--pixels"]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = hitmap_from_csv(converted_hits(run, tmp_path))
    for chip in (0, 1):
        start = out.index(next(line for line in out if line.startswith(f"chip {chip}: ")))
        assert out[start].startswith(f"chip {chip}: {counts[chip].sum()} hits in "
                                     f"{np.count_nonzero(counts[chip])} pixels")
        rows = out[start + 1:start + 13]  # row 11 first, row 0 last
        drawn = np.array([[c != EMPTY for c in line[4:]] for line in rows[::-1]])
        assert np.array_equal(drawn, counts[chip][:12, :14] > 0)
        assert np.count_nonzero(counts[chip] == 0) > 5  # the test sees empty pixels too


def test_text_hitmap_scale_and_layout():
    counts = np.zeros((32, 32), dtype=np.int64)
    counts[0, 0], counts[2, 11], counts[1, 3] = 1, 1000, 30
    lines = text_hitmap(counts)
    assert lines[0] == f"  2 {EMPTY * 11}{RAMP[-1]}"  # the busiest pixel has the last char
    assert lines[2][4] == RAMP[0]  # a single hit: the first char
    assert lines[1][4 + 3] not in (EMPTY, RAMP[0], RAMP[-1])
    assert lines[-2:] == ["    0         1", "    012345678901"]
    assert text_hitmap(np.zeros((32, 32)))[0] == f"  0 {EMPTY}"


def test_info_pixels_json_holds_each_chips_counts(tmp_path, capsys):
    import json

    run = emulate(tmp_path / "px.apx", "--seed", "3", "--mode", "poisson", "--rate", "300",
                  "--chips", "2", "--readouts", "50")
    assert main(["info", str(run), "--pixels", "--json"]) == 0
    pixels = json.loads(capsys.readouterr().out)["pixels"]
    counts = hitmap_from_csv(converted_hits(run, tmp_path))
    assert sorted(pixels) == ["0", "1"]
    for chip, grid in pixels.items():
        assert np.array_equal(np.array(grid), counts[int(chip)])
