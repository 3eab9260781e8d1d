"""Multicast throughput on loopback, sender and receiver in separate processes (``apx-hil send``
and ``apx-hil recv``) in a network namespace, with real-size readouts (16 data bytes, 35 bytes
serialized). Targets: the receiver keeps up with no loss at >= 1 million readouts/s, and at
>= 500k readouts/s while decoding hits; legacy mode and the all-out rates are reported."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from astropix_hil.fileio import apx_open, encode_header

from ..conftest import find_realdata
from ..netns import Netns, made_netns

READOUTS = 3_000_000
PORT = 5007


@pytest.fixture(scope="module")
def small_readouts_file(tmp_path_factory):
    """The real run's 16-byte readouts repeated to READOUTS (ids renumbered, consecutive)."""
    path = find_realdata() / "astropix4-threshold-scan-20250723" / "20250723_092534_data.apx"
    with apx_open(path) as reader:
        header = {k: v for k, v in reader.header.items() if k != "readout_uid"}
        rows = [r.to_bytes() for r in reader if len(r.data()) == 16]
    table = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 35)
    body = np.tile(table, (-(-READOUTS // len(rows)), 1))[:READOUTS].copy()
    body[:, 3:7] = np.arange(READOUTS, dtype="<u4").view(np.uint8).reshape(-1, 4)
    out = tmp_path_factory.mktemp("bench") / "small_readouts.apx"
    with open(out, "wb") as stream:
        stream.write(encode_header(header))
        stream.write(body.tobytes())
    return out


@pytest.fixture
def ns():
    yield from made_netns()


def _transfer(space: Netns, path, send_args: list[str], recv_args: list[str]) -> dict:
    receiver = space.apx_hil("recv", "--quiet", "--json", "--idle-exit", "2", *recv_args,
                             stdout=subprocess.PIPE, text=True)
    space.wait_udp_bound(receiver, PORT)
    # --linger: heartbeats after the last readout tell the receiver of losses at the very end,
    # when an overloaded socket dropped the end-of-stream heartbeats too.
    sender = space.apx_hil("send", str(path), "--json", "--linger", "1.5", *send_args,
                           stdout=subprocess.PIPE, text=True)
    sent = json.loads(sender.communicate(timeout=300)[0])
    got = json.loads(receiver.communicate(timeout=300)[0].splitlines()[-1])
    return {"sent": sent, "received": got}


def _report(benchmark, name: str, result: dict) -> dict:
    sent, got = result["sent"], result["received"]
    consumed, totals = got["consumed"], got["totals"]
    seconds = consumed["receiving_s"]
    datagrams = totals["datagrams_received"]
    figures = {
        "readouts_sent": sent["readouts_sent"],
        "sender_readouts_per_s": sent["readouts_per_s"],
        "readouts_received": consumed["readouts"],
        "readouts_per_s": consumed["readouts"] / seconds,
        "datagrams_per_s": datagrams / seconds,
        "MB_per_s": totals["bytes_received"] / seconds / 1e6,
        "datagrams_lost": totals["datagrams_lost"],
        "readouts_lost": totals["readouts_lost"],
        "socket_drops": got["socket_drops"],
        "hits": consumed["hits"],
    }
    benchmark.extra_info.update(figures)
    print(f"\n{name}: {figures['readouts_per_s'] / 1e6:.2f} M readouts/s received "
          f"(sender {figures['sender_readouts_per_s'] / 1e6:.2f} M/s), "
          f"{figures['datagrams_per_s'] / 1e3:.1f} k datagrams/s, "
          f"{figures['MB_per_s']:.1f} MB/s, lost {figures['readouts_lost']} readouts in "
          f"{figures['datagrams_lost']} datagrams (socket drops {figures['socket_drops']})"
          + (f", {figures['hits']} hits decoded" if figures["hits"] is not None else ""))
    return figures


def _run(benchmark, space, path, name, send_args, recv_args=()):
    result = benchmark.pedantic(_transfer, args=(space, path, send_args, list(recv_args)),
                                rounds=1, iterations=1)
    return _report(benchmark, name, result)


def bench_framed_keeps_up_at_1M_readouts_per_s(benchmark, ns, small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "framed 1M/s",
                   ["--rate", "1050000"])
    assert figures["readouts_lost"] == 0
    assert figures["readouts_received"] == READOUTS
    assert figures["readouts_per_s"] >= 1_000_000


def bench_framed_with_hits_keeps_up_at_500k_readouts_per_s(benchmark, ns,
                                                           small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "framed --hits 1M/s",
                   ["--rate", "1050000"], ["--hits"])
    assert figures["readouts_lost"] == 0
    assert figures["hits"] >= READOUTS
    assert figures["readouts_per_s"] >= 500_000


def bench_framed_as_fast_as_possible(benchmark, ns, small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "framed, no pacing",
                   ["--as-fast-as-possible"])
    assert figures["readouts_received"] + figures["readouts_lost"] == READOUTS


def bench_framed_with_hits_as_fast_as_possible(benchmark, ns, small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "framed --hits, no pacing",
                   ["--as-fast-as-possible"], ["--hits"])
    assert figures["readouts_received"] + figures["readouts_lost"] == READOUTS


def bench_legacy_as_fast_as_possible(benchmark, ns, small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "legacy, no pacing",
                   ["--as-fast-as-possible", "--legacy"])
    assert figures["readouts_received"] > 0


def bench_legacy_with_hits_as_fast_as_possible(benchmark, ns, small_readouts_file):
    figures = _run(benchmark, ns, small_readouts_file, "legacy --hits, no pacing",
                   ["--as-fast-as-possible", "--legacy"], ["--hits"])
    assert figures["readouts_received"] > 0
