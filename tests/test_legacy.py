"""Import of legacy ``.log`` files."""

from __future__ import annotations

import pytest

from astropix_hil.errors import FormatError
from astropix_hil.fileio import apx_open
from astropix_hil.legacy import import_log

LOG = """\
Voltagecard: {'thpmos': 0, 'cardConf2': 0, 'vcasc2': 1.1, 'BL': 1}
vDAC: {'blpix': 568, 'thpix': 610, 'vinj': 170}
 Namespace(name='threshold_40mV', outdir='E:/data', inject=[1, 9], vinj=300.0, maxruns=None, \
timeit=False)
0\tb'bcbce050fecd067cc500bcbcbcbcbcbcffffffff'
1\tb'bcbce05092c9008a4701bcbcbcbcbcbcffff'
7\tb'bcbce050328f04da3603bcbcbcbcbcbc'
"""


def test_log_imports_header_ids_and_zero_timestamps(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    result = import_log(log, tmp_path / "run.apx")
    assert result.readouts == 3 and result.skipped == 0
    with apx_open(tmp_path / "run.apx") as reader:
        header = reader.header
        readouts = list(reader)
    assert header["readout_uid"] == 4000
    assert header["vDAC"] == {"blpix": 568, "thpix": 610, "vinj": 170}
    assert header["options"]["inject"] == [1, 9]
    assert header["options"]["maxruns"] is None
    assert [r.readout_id for r in readouts] == [0, 1, 7]
    assert {r.timestamp for r in readouts} == {0}
    assert readouts[0].data() == bytes.fromhex("bcbce050fecd067cc500bcbcbcbcbcbc")
    assert [len(r.hits()) for r in readouts] == [1, 1, 1]


def test_unreadable_readout_is_skipped_with_a_warning_naming_the_line(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(LOG + "8\tb'bcbce05'\n")
    with pytest.warns(UserWarning, match="line 7: readout 8 skipped"):
        result = import_log(log, tmp_path / "run.apx")
    assert (result.readouts, result.skipped) == (3, 1)


def test_code_in_a_log_header_is_not_evaluated(tmp_path):
    log = tmp_path / "evil.log"
    log.write_text("Voltagecard: __import__('os').system('false')\n0\tb'bc'\n")
    with pytest.raises(FormatError, match="line 1: not a Python literal"):
        import_log(log, tmp_path / "evil.apx")


def test_a_malformed_readout_line_is_an_error(tmp_path):
    log = tmp_path / "bad.log"
    log.write_text(LOG + "9 no tab here\n")
    with pytest.raises(FormatError, match="line 7: expected INDEX<TAB>b'HEX'"):
        import_log(log, tmp_path / "bad.apx")
