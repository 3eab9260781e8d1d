"""pytest plugin of astropix-hil: fixtures to test your own DAQ or monitor against our board.

Active wherever astropix-hil is installed (entry point ``pytest11``: ``apx_hil``). Fixtures:

* ``apx_board``: a virtual board on a pseudo-terminal for the test's duration
  (:class:`BoardUnderTest`: ``.port`` to open, ``.stats``, ``.truth()``);
* ``apx_board_url``: the same board as an in-process pyserial URL (``apxemu://?...``);
* ``apx_emulated_run``: an ``.apx`` file made by the emulator, with its truth
  (:class:`EmulatedRunFiles`);
* ``apx_multicast``: a multicast group and port of the test's own, on loopback, or across a
  pair of network namespaces when the tests run as root
  (:class:`~astropix_hil.testing.netpair.MulticastChannel`);
* ``apx_strategies``: :mod:`astropix_hil.strategies`, our hypothesis strategies.

Board and run options come from a marker or from indirect parametrization::

    @pytest.mark.apx_board(seed=3, rate=2000)
    def test_my_daq(apx_board, apx_multicast):
        run_my_daq(apx_board.port, apx_multicast.address)
        assert my_hits == apx_board.truth()

    @pytest.mark.parametrize("apx_board", [{"seed": 1}, {"seed": 2}], indirect=True)
    def test_seeds(apx_board): ...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest

from .netpair import MulticastChannel, loopback_channel, namespace_channel, namespaces_available

PROFILES = ("nexys", "astep")
#: The in-process pyserial URL scheme of each profile.
URL_SCHEMES = {"nexys": "apxemu", "astep": "astepemu"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "apx_board(profile='nexys', **options): options of the apx_board and "
                   "apx_board_url fixtures (seed, rate, mode, chips, anomalies, fifo_size...)")
    config.addinivalue_line(
        "markers", "apx_emulated_run(readouts=100, seed=0, **options): options of the "
                   "apx_emulated_run fixture (any emulator option)")
    config.addinivalue_line(
        "markers", "apx_multicast(namespaces=None): True/False forces namespaces or loopback "
                   "(default: namespaces when root)")


def _options(request: pytest.FixtureRequest, marker: str) -> dict[str, Any]:
    """Options from the test's marker, overridden by an indirect parameter (a dict)."""
    options: dict[str, Any] = {}
    found = request.node.get_closest_marker(marker)
    if found is not None:
        options.update(found.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        options.update(param)
    return options


class _LockedBoard:
    """A board whose requests and truth are serialised: the pty thread and the test share it."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.lock = threading.Lock()

    def process(self, data: bytes) -> bytes:
        with self.lock:
            return self.board.process(data)


class BoardUnderTest:
    """A virtual board served on a pty while the test runs."""

    def __init__(self, board: Any, profile: str) -> None:
        from ..boards.ptyserve import PtyServer

        self.profile = profile
        self._locked = _LockedBoard(board)
        self._server = PtyServer(self._locked)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._server.serve, args=(self._stop,),
                                        name="apx_board", daemon=True)
        self._thread.start()
        #: The pseudo-terminal to open as the board's serial port.
        self.port: str = self._server.path

    @property
    def board(self) -> Any:
        """The board object (its register file, FIFO and chip)."""
        return self._locked.board

    @property
    def stats(self) -> dict[str, Any]:
        """The board's counters now (requests per register, readouts served, overflows...)."""
        with self._locked.lock:
            return self.board.stats.as_dict()

    def truth(self) -> np.ndarray:
        """The hits of the reads served so far, as an honest decoder reports them (dtype
        :data:`astropix_hil.fmt.HIT_DTYPE`; readout_id counts the non-empty reads from 0)."""
        with self._locked.lock:
            return self.board.truth()

    def stop(self) -> None:
        """Stop serving and close the pty (a program still using it sees the port vanish)."""
        self._stop.set()
        self._thread.join()
        self._server.close()


def _board_options(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    options = dict(options)
    profile = options.pop("profile", "nexys")
    if profile not in PROFILES:
        raise pytest.UsageError(f"apx_board: unknown profile {profile!r} (known: {PROFILES})")
    return profile, options


def _make_board(profile: str, options: dict[str, Any]) -> Any:
    if profile == "astep":
        from ..boards.astep.board import AstepBoard

        return AstepBoard.from_options(**options)
    from ..boards.nexys.board import VirtualBoard

    return VirtualBoard.from_options(truth=True, **options)


@pytest.fixture
def apx_board(request: pytest.FixtureRequest) -> Iterator[BoardUnderTest]:
    """A virtual board on a pseudo-terminal for the test's duration (profile ``nexys``, the
    default, or ``astep``)."""
    profile, options = _board_options(_options(request, "apx_board"))
    board = BoardUnderTest(_make_board(profile, options), profile)
    try:
        yield board
    finally:
        board.stop()


@pytest.fixture
def apx_board_url(request: pytest.FixtureRequest) -> str:
    """The virtual board as an in-process pyserial URL, e.g. ``apxemu://?seed=1&rate=1000``
    or ``astepemu://?layers=3&chips=4`` (open it with ``serial.serial_for_url`` after
    ``import astropix_hil``; the Nexys board keeps its truth: ``port.board.truth()``)."""
    profile, options = _board_options(_options(request, "apx_board"))
    if profile == "nexys":
        options.setdefault("keep_truth", 1)
    return f"{URL_SCHEMES[profile]}://?" + urlencode(options)


@dataclass
class EmulatedRunFiles:
    """An emulated run on disk: the ``.apx``, its truth CSV and the truth as hits."""

    path: Path
    truth_csv: Path
    truth: np.ndarray
    header: dict[str, Any]


@pytest.fixture
def apx_emulated_run(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> EmulatedRunFiles:
    """An ``.apx`` file made by the emulator (default 100 readouts, seed 0), with its truth."""
    from .. import __version__
    from ..emulator import Emulator, EmulatorConfig, write_run
    from ..hitcsv import read_hits_csv

    options = _options(request, "apx_emulated_run")
    readouts = int(options.pop("readouts", 100))
    seed = int(options.pop("seed", 0))
    config = EmulatorConfig.build(**options)
    folder = tmp_path_factory.mktemp("apx_emulated_run")
    path, truth_csv = folder / "run.apx", folder / "truth.csv"
    header = {"emulator": {"version": __version__, "seed": seed, "config": config.describe()}}
    with open(truth_csv, "w", encoding="utf-8", newline="") as truth:
        write_run(path, Emulator(config, seed).runs(readouts=readouts), header, truth)
    truth_header, hits = read_hits_csv(truth_csv)
    return EmulatedRunFiles(path, truth_csv, hits, truth_header or {})


@pytest.fixture
def apx_multicast(request: pytest.FixtureRequest) -> Iterator[MulticastChannel]:
    """A multicast group and port of the test's own: across two network namespaces when
    running as root (and iproute2 is there), else on loopback."""
    found = request.node.get_closest_marker("apx_multicast")
    wanted = found.kwargs.get("namespaces") if found is not None else None
    why_not = namespaces_available()
    if wanted and why_not:
        pytest.fail(f"apx_multicast(namespaces=True): {why_not}")
    if wanted is False or (wanted is None and why_not):
        yield loopback_channel()
        return
    with namespace_channel() as channel:
        yield channel


@pytest.fixture
def apx_strategies():
    """:mod:`astropix_hil.strategies`: hypothesis strategies for readouts and streams."""
    from .. import strategies

    return strategies
