"""Every bad input to ``apx-hil`` ends in ONE line on stderr naming the problem, never a
traceback: status 2 for a usage error, 1 for anything else (issue 14)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astropix_hil import cli
from astropix_hil.cli import argtypes, build_parser, main


def run_cli(*args: str) -> tuple[int, str]:
    """Run ``apx-hil ARGS`` in this process; return (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse ends usage errors (and --help) this way
            status = exc.code
    return status, err.getvalue()


def assert_one_error_line(status: int, err: str, command: str, expected_status: int,
                          *names: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"apx-hil {command}: error: "), err
    assert status == expected_status, err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


def apx_with_header(path: Path, text: bytes) -> Path:
    path.write_bytes(b"%APXDF" + struct.pack("<I", len(text)) + text)
    return path


def billion_laughs() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


def make_input(tmp_path: Path, kind: str) -> Path:
    """The bad input file of one case."""
    files = {
        "uid_list.apx": lambda p: apx_with_header(p, b'{"readout_uid": [4000]}'),
        "deep_header.apx": lambda p: apx_with_header(
            p, b'{"readout_uid": 4000, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "random.log": lambda p: p.write_bytes(bytes(range(255, -1, -1)) * 8),
        "set.log": lambda p: p.write_text("vDAC: {1, 2}\n0\tb'bcbc'\n"),
        "superscript.log": lambda p: p.write_text("vDAC: {'a': 1}\n²\tb'bcbc'\n"),
        "index_2_32.log": lambda p: p.write_text(f"{2**32}\tb'bcbc'\n"),
        "nested.log": lambda p: p.write_text("vDAC: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        "nested200.log": lambda p: p.write_text("vDAC: " + "[" * 200 + "]" * 200 + "\n"),
        "unhashable.log": lambda p: p.write_text("vDAC: {[1]: 2}\n"),
        "not_utf8.yml": lambda p: p.write_bytes(b"vdac: \xff\xfe\n"),
        "date.yml": lambda p: p.write_text("when: 2025-07-23\n"),
        "laughs.yml": lambda p: p.write_text(billion_laughs()),
        "missing.key": lambda p: None,
    }
    path = tmp_path / kind
    files[kind](path)
    return path


# (arguments, the input file to make or None, exit status, what the line must name)
CASES = {
    "info readout_uid list": (["info", "{}"], "uid_list.apx", 1, ["uid_list.apx", "readout_uid"]),
    "info header nested 100k deep": (["info", "{}"], "deep_header.apx", 1,
                                     ["deep_header.apx", "nested too deep"]),
    "import-log random bytes": (["import-log", "{}", "-o", "{out}"], "random.log", 1,
                                ["random.log", "not UTF-8"]),
    "import-log an .apx": (["import-log", "{}", "-o", "{out}"], "uid_list.apx", 1,
                           ["uid_list.apx", "an .apx file"]),
    "import-log set literal": (["import-log", "{}", "-o", "{out}"], "set.log", 1,
                               ["set.log", "line 1", "set"]),
    "import-log index ²": (["import-log", "{}", "-o", "{out}"], "superscript.log", 1,
                           ["superscript.log", "line 2"]),
    "import-log index 2^32": (["import-log", "{}", "-o", "{out}"], "index_2_32.log", 1,
                              ["index_2_32.log", "4294967296", "readout_id"]),
    "import-log nested literal": (["import-log", "{}", "-o", "{out}"], "nested.log", 1,
                                  ["nested.log", "line 1"]),
    "import-log nested 200 deep": (["import-log", "{}", "-o", "{out}"], "nested200.log", 1,
                                   ["nested200.log", "line 1", "nested"]),
    "import-log unhashable key": (["import-log", "{}", "-o", "{out}"], "unhashable.log", 1,
                                  ["unhashable.log", "line 1"]),
    "daq --config not UTF-8": (["daq", "--config", "{}", "--out", "{out}", "--no-multicast"],
                               "not_utf8.yml", 1, ["not_utf8.yml", "UTF-8"]),
    "daq --config YAML date": (["daq", "--config", "{}", "--out", "{out}", "--no-multicast"],
                               "date.yml", 1, ["date.yml", "when", "date"]),
    "daq --config billion laughs": (["daq", "--config", "{}", "--out", "{out}",
                                     "--no-multicast"], "laughs.yml", 1,
                                    ["laughs.yml", "too large"]),
    "send --max-datagram 10": (["send", "x.apx", "--max-datagram", "10"], None, 2,
                               ["--max-datagram", "10"]),
    "recv --port 70000": (["recv", "--port", "70000"], None, 2, ["--port", "70000"]),
    "recv --reorder-window 0": (["recv", "--reorder-window", "0"], None, 2,
                                ["--reorder-window"]),
    "board --seed -1": (["board", "--pty", "--seed", "-1"], None, 2, ["--seed", "-1"]),
    "daq --ttl 999": (["daq", "--ttl", "999", "--out", "{out}"], None, 2, ["--ttl", "999"]),
    "daq --duration nan": (["daq", "--duration", "nan", "--out", "{out}"], None, 2,
                           ["--duration", "nan"]),
    # A failure after the file is made (here: the sender's key) must not leave it behind.
    "daq --key missing": (["daq", "--key", "{}", "--out", "{out}", "--readouts", "1"],
                          "missing.key", 1, ["missing.key"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_input_is_one_line_naming_it(case, tmp_path):
    args, kind, expected, names = CASES[case]
    source = make_input(tmp_path, kind) if kind else None
    out = tmp_path / "out.apx"
    argv = [str(source) if a == "{}" else str(out) if a == "{out}" else a for a in args]
    status, err = run_cli(*argv)
    assert_one_error_line(status, err, args[0], expected, *names)
    if args[0] == "daq":  # nothing half-made blocks a retry (--ttl 999 used to leave a header)
        assert not out.exists()


# Every option that takes a time or a rate: nan and inf are usage errors.
TIME_AND_RATE_OPTIONS = [
    ("daq", "--reply-timeout"), ("daq", "--duration"), ("daq", "--linger"),
    ("daq", "--sync-interval"), ("daq", "--progress-interval"),
    ("board", "--rate"), ("board", "--duration"),
    ("send", "--rate"), ("send", "--flush-delay"), ("send", "--heartbeat"), ("send", "--linger"),
    ("recv", "--duration"), ("recv", "--idle-exit"), ("recv", "--consume-delay"),
    ("recv", "--reorder-timeout"),
    ("emulate", "--rate"), ("emulate", "--duration"), ("emulate", "--poll-interval"),
    ("emulate", "--jitter"),
    ("run-with-board", "--rate"), ("run-with-board", "--timeout"),
    ("monitor", "--speed"), ("monitor", "--every"), ("monitor", "--duration"),
    ("monitor", "--idle-exit"), ("agent", "--auth-timeout"),
    ("configure", "--period"), ("configure", "--reply-timeout"), ("configure", "--vinj"),
    ("daq", "--period"), ("daq", "--vinj"), ("emulate", "--period"), ("emulate", "--vinj"),
    ("daq", "--ts-freq"), ("daq", "--reset-delay"),
    ("scan injection", "--period"), ("scan injection", "--reply-timeout"),
    ("scan threshold", "--period"), ("scan threshold", "--reply-timeout"),
    ("scan threshold", "--time"), ("scan threshold", "--vinj"),
]
_REQUIRED = {"board": ["--pty"], "send": ["x.apx"], "emulate": ["--out", "x.apx"],
             "configure": ["--port", "apxemu://", "--config", "x.yml"]}
#: Arguments that must come after the option under test (a program to run ends the options).
_TRAILING = {"run-with-board": ["--", "true"]}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize(("command", "option"), TIME_AND_RATE_OPTIONS)
def test_nan_and_inf_are_refused_by_every_time_and_rate(command, option, value):
    status, err = run_cli(*command.split(), *_REQUIRED.get(command, []), f"{option}={value}",
                          *_TRAILING.get(command, []))
    assert_one_error_line(status, err, command, 2, option, value)


def test_board_speed_takes_inf_but_not_nan():
    assert argtypes.speed_factor("inf") == math.inf
    status, err = run_cli("board", "--pty", "--speed", "nan")
    assert_one_error_line(status, err, "board", 2, "--speed")


def _subcommand_actions(parser=None, prefix=""):
    """(command, action) of every command, nested ones (``scan injection``) too."""
    parser = parser or build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from _subcommand_actions(subparser, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", action


def test_no_option_parses_numbers_with_a_bare_float_or_int():
    """The rule behind the list above: numbers go through cli.argtypes, which refuse nan,
    inf and out-of-range values, so a new option cannot forget it."""
    bare = [(name, action.option_strings) for name, action in _subcommand_actions()
            if action.type in (float, int)]
    assert bare == []


def test_time_and_rate_list_covers_every_float_option():
    floats = {(name, action.option_strings[-1]) for name, action in _subcommand_actions()
              if action.type in (argtypes.positive_float, argtypes.non_negative_float)}
    assert floats == set(TIME_AND_RATE_OPTIONS)


@pytest.mark.parametrize(("function", "text", "value"), [
    (argtypes.positive_float, "0.5", 0.5), (argtypes.non_negative_float, "0", 0.0),
    (argtypes.port_number, "65535", 65535), (argtypes.ttl, "0", 0),
    (argtypes.positive_int, "1", 1), (argtypes.seed, "0", 0),
])
def test_argument_types_accept_their_range(function, text, value):
    assert function(text) == value


@pytest.mark.parametrize(("function", "text"), [
    (argtypes.positive_float, "0"), (argtypes.positive_float, "x"),
    (argtypes.non_negative_float, "-1e-9"), (argtypes.port_number, "0"),
    (argtypes.port_number, "65536"), (argtypes.ttl, "256"), (argtypes.ttl, "-1"),
    (argtypes.positive_int, "0"), (argtypes.positive_int, "1.5"), (argtypes.seed, "-1"),
    (argtypes.speed_factor, "0"),
])
def test_argument_types_refuse_outside_it(function, text):
    with pytest.raises(argparse.ArgumentTypeError):
        function(text)


def test_an_unexpected_error_is_one_line_with_a_hint_and_v_shows_the_traceback(monkeypatch):
    def broken(args):
        raise KeyError("surprise")
    monkeypatch.setattr(cli.info, "run", broken)
    status, err = run_cli("info", "x.apx")
    line = assert_one_error_line(status, err, "info", 1, "KeyError", "surprise")
    assert "rerun with -v" in line
    status, err = run_cli("-v", "info", "x.apx")
    assert status == 1
    assert "Traceback" in err and "in broken" in err
    assert err.splitlines()[-1].startswith("apx-hil info: error: KeyError")


def test_a_warning_is_one_line_naming_the_file(tmp_path):
    run = tmp_path / "run.apx"
    assert run_cli("emulate", "--readouts", "5", "--out", run)[0] == 0
    cut = tmp_path / "cut.apx"
    cut.write_bytes(run.read_bytes()[:-3])
    status, err = run_cli("convert", cut, "-o", tmp_path / "cut.csv")
    assert status == 0
    warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 1, err
    assert warnings_[0].startswith(f"warning: {cut}: file ends inside a readout")
    # Not Python's format: no path of the code that warned, no source line.
    assert ".py:" not in err and "warn(" not in err


# -- properties: where the input space is large ---------------------------------------------

def _check_outcome(status: int, err: str, command: str) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    if status == 0:
        assert not any(": error:" in line for line in errors), err
    else:
        assert status == 1, err
        assert len(errors) == 1, err
        assert errors[0].startswith(f"apx-hil {command}: error: "), err


_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.binary(max_size=3000))
def test_import_log_of_arbitrary_bytes_is_never_a_traceback(data):
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "x.log"
        log.write_bytes(data)
        status, err = run_cli("import-log", log, "-o", Path(folder) / "x.apx")
    _check_outcome(status, err, "import-log")


def _python_literals() -> st.SearchStrategy[str]:
    """Source text of Python literals, JSON-able or not (sets, bytes, complex, tuples as keys,
    huge and deep values), and near-literals."""
    scalars = st.one_of(
        st.integers().map(repr), st.floats().map(repr), st.text(max_size=10).map(repr),
        st.binary(max_size=5).map(repr), st.sampled_from(
            ["None", "True", "...", "1j", "-0.0", "1e999", "'x' 'y'", "9" * 5000, "x",
             "__import__('os')", "{", "]", "1+", "f'{1}'"]))

    def containers(children):
        return st.one_of(
            st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(children, max_size=4).map(lambda xs: "(" + ", ".join(xs) + ",)"),
            st.lists(children, min_size=1, max_size=4).map(lambda xs: "{" + ", ".join(xs) + "}"),
            st.lists(st.tuples(children, children), max_size=3).map(
                lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
            st.integers(1, 400).map(lambda n: "[" * n + "]" * n))
    return st.recursive(scalars, containers, max_leaves=12)


@_PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["vDAC", "Voltagecard", " Namespace", "readout_uid",
                                           "x y"]),
                          _python_literals()), max_size=3),
       st.lists(st.tuples(st.text("0123456789²٣", min_size=1, max_size=12),
                          st.text("0123456789abcdefbx'", max_size=20)), max_size=3))
def test_import_log_of_arbitrary_literals_is_never_a_traceback(headers, readouts):
    lines = []
    for name, literal in headers:
        lines.append(f" Namespace(a={literal})" if name == " Namespace" else f"{name}: {literal}")
    lines += [f"{index}\t{text}" for index, text in readouts]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "x.log"
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        status, err = run_cli("import-log", log, "-o", Path(folder) / "x.apx")
    _check_outcome(status, err, "import-log")


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.just(4000)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20)


@_PROPERTY
@given(st.one_of(
    st.dictionaries(st.text(max_size=12), _json, max_size=5).flatmap(
        lambda header: st.one_of(_json, st.just(4000)).map(
            lambda uid: json.dumps({**header, "readout_uid": uid}).encode())),
    _json.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b'{"readout_uid": 4000, "x": ' + b"[" * n + b"]" * n
                             + b"}")),
    st.binary(max_size=100))
def test_info_on_arbitrary_json_headers_is_never_a_traceback(header, data):
    with tempfile.TemporaryDirectory() as folder:
        path = apx_with_header(Path(folder) / "x.apx", header)
        with path.open("ab") as stream:
            stream.write(data)
        status, err = run_cli("info", path)
    _check_outcome(status, err, "info")
