"""The in-process board ports (apxemu://, astepemu://) move their board on while nobody asks,
as the pty server's idle hook does, so that a request after a long silence finds no backlog;
the helper thread ends with the port."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

import pytest
import serial

import astropix_hil  # noqa: F401 - registers the URL schemes
from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import open_link
from astropix_hil.urlhandler import emulated

URLS = ["apxemu://?seed=1&mode=poisson&rate=100000", "astepemu://?seed=1&rate=100000"]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(" idle")]


@pytest.mark.parametrize("url", URLS)
def test_an_idle_board_is_moved_on_without_a_request(url):
    port = serial.serial_for_url(url, timeout=0.1)
    try:
        stats = port.board.stats
        # No request at all: only the port's helper can make the chip's hits.
        assert wait_for(lambda: stats.hits_generated > 1000)
        with port.lock:
            before = stats.hits_generated
        assert wait_for(lambda: stats.hits_generated > before)  # and it goes on doing so
    finally:
        port.close()


def opened_with_helper(url: str) -> tuple[serial.SerialBase, threading.Thread]:
    """A port and the helper thread its opening started."""
    before = set(helpers())
    port = serial.serial_for_url(url, timeout=0.1)
    (helper,) = set(helpers()) - before
    return port, helper


@pytest.mark.parametrize("url", URLS)
def test_the_helper_ends_when_the_port_is_closed_or_dropped(url):
    port, helper = opened_with_helper(url)
    port.close()
    assert wait_for(lambda: not helper.is_alive())
    stats = port.board.stats
    closed_at = stats.hits_generated
    assert wait_for(lambda: stats.hits_generated > closed_at, timeout=0.3) is False

    dropped, helper = opened_with_helper(url)
    del dropped
    gc.collect()
    assert wait_for(lambda: not helper.is_alive())  # an unclosed port does not live on


def test_requests_hold_the_helper_off(monkeypatch):
    calls: list[float] = []
    original = VirtualBoard.advance

    def spy(self) -> None:
        calls.append(time.monotonic())
        original(self)

    monkeypatch.setattr(VirtualBoard, "advance", spy)
    link = open_link(URLS[0])
    try:
        assert wait_for(lambda: len(calls) >= 2)  # idle: moved on again and again
        start = time.monotonic()
        while time.monotonic() < start + 0.5:  # a DAQ asking more often than the idle time
            link.read_register(0x15)
        end = time.monotonic()
        # (one call may have begun as the requests began)
        assert [t for t in calls if start + emulated.IDLE_ADVANCE_S <= t <= end] == []
        assert wait_for(lambda: calls[-1] > end)  # quiet again: moved on again
    finally:
        link.close()
