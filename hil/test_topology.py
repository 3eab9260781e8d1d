"""Case 0, the network itself, with plain sockets (no apx-hil program involved).

If these fail, the cases below fail for reasons of the network, not of the programs: the
DAQ host reaches every monitor, the switch forwards a group only to hosts that joined it, the
router forwards by TTL, and the dual host's interface choice decides where datagrams go.
"""

from __future__ import annotations

import pytest

from . import kernel, programs
from .topology import Topology

pytestmark = pytest.mark.case("0 network")
N = 40
#: How long a receiver that must get nothing listens (the sender needs ~0.1 s).
SILENT = 2.0


def test_daq_host_reaches_every_monitor(lab: Topology, case) -> None:
    flow = lab.flow(0, 0)
    receivers = [programs.probe_receiver(m, flow, N, 15.0) for m in lab.monitors]
    lab.switch.wait_joined(flow.group, lab.monitors)
    sent = programs.probe_send(lab.daq, flow, N)
    assert sent == {"sent": N, "errors": 0}
    for receiver in receivers:
        got = receiver.result()
        assert got["received"] == N, receiver.host.name
        assert got["sources"] == [lab.daq.address()]


def test_switch_forwards_a_group_only_to_members(lab: Topology, case) -> None:
    flow = lab.flow(0, 1)
    member, bystander = lab.monitors[0], lab.monitors[1]
    counters = {h.name: kernel.ingress_counter(h, flow.group, flow.port)
                for h in (member, bystander)}
    receiver = programs.probe_receiver(member, flow, N, 15.0)
    lab.switch.wait_joined(flow.group, [member])
    if lab.switch.inspectable:
        assert bystander.name not in lab.switch.members(flow.group)
    programs.probe_send(lab.daq, flow, N)
    assert receiver.result()["received"] == N
    assert counters[member.name].packets("arrived") == N
    # IGMP snooping: the group never reached the host that did not join it.
    assert counters[bystander.name].packets("arrived") == 0


def test_router_forwards_ttl_2_and_keeps_ttl_1(lab: Topology, case) -> None:
    flow = lab.flow(0, 2)
    far_in = kernel.ingress_counter(lab.far, flow.group, flow.port)
    near = programs.probe_receiver(lab.monitors[0], flow, N, 15.0)
    lab.switch.wait_joined(flow.group, lab.monitors[:1])
    # Listening (joined) all the time the sender sends.
    far = programs.probe_receiver(lab.far, flow, N, SILENT)
    programs.probe_send(lab.daq, flow, N, ttl=1)
    assert near.result()["received"] == N
    assert far.result()["received"] == 0
    assert far_in.packets("arrived") == 0
    far = programs.probe_receiver(lab.far, flow, N, 15.0)
    programs.probe_send(lab.daq, flow, N, ttl=2)
    assert far.result() == {"received": N, "sources": [lab.daq.address()], "other": 0}


@pytest.mark.parametrize("label", ["alt", "lan"])
def test_interface_choice_decides_the_network(lab: Topology, case, label: str) -> None:
    flow = lab.flow(0, 3 if label == "alt" else 4)
    reached, missed = (lab.dual_peer, lab.monitors[0]) if label == "alt" else \
        (lab.monitors[0], lab.dual_peer)
    missed_in = kernel.ingress_counter(missed, flow.group, flow.port)
    near = programs.probe_receiver(reached, flow, N, 15.0)
    if reached in lab.monitors:
        lab.switch.wait_joined(flow.group, [reached])
    # Joined, so that a datagram would be accepted, had the switch forwarded it.
    away = programs.probe_receiver(missed, flow, N, SILENT)
    if missed in lab.monitors:
        lab.switch.wait_joined(flow.group, [missed])
    programs.probe_send(lab.dual, flow, N, interface=lab.dual.address(label))
    assert near.result()["received"] == N
    assert away.result()["received"] == 0
    assert missed_in.packets("arrived") == 0
