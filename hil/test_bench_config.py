"""The bench config file: the example parses, and every mistake is named with its place."""

from __future__ import annotations

import copy
import ipaddress
import os

import pytest
import yaml

from . import bench
from .errors import TopologyError
from .topology import BoardSpec

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.example.yml")


def _example() -> dict:
    with open(EXAMPLE, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def test_the_example_config_parses() -> None:
    config = bench.read(EXAMPLE)
    assert config["groups"] == ipaddress.IPv4Network("239.18.0.0/16")
    assert config["board"] == BoardSpec("emulator")
    assert config["switch"] == {"kind": "opaque", "settle": 3.0}
    assert config["roles"]["monitors"] == ["mon-1", "mon-2", "laptop"]
    daq2 = config["hosts"]["daq2"]
    assert [(i.label, i.name, i.ip) for i in daq2["interfaces"]] == [
        ("lan", "enp3s0", "10.214.0.20"), ("alt", "enp4s0", "10.216.0.20")]
    assert config["hosts"]["daq-pc"]["kind"] == "ssh"
    assert config["hosts"]["mon-1"]["kind"] == "agent"
    assert config["hosts"]["laptop"]["kind"] == "local"
    assert config["hosts"]["far-pc"]["access"]["ssh"] == "ssh -o BatchMode=yes astro@10.215.0.11"
    assert config["hosts"]["mon-2"]["capabilities"] == ["nft", "quiet"]
    assert config["lease_ttl"] == 1800.0
    without = {k: v for k, v in _example().items() if k != "lease_ttl"}
    assert bench.parse(without)["lease_ttl"] == bench.DEFAULT_TTL_S


def _broken(edit) -> str:
    config = _example()
    edit(config)
    with pytest.raises(TopologyError) as info:
        bench.parse(copy.deepcopy(config), "my.yml")
    return str(info.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(color="blue"), "my.yml: (top): unknown keys ['color']"),
    (lambda c: c.update(groups="10.0.0.0/8"), "groups: need a multicast network"),
    (lambda c: c.update(groups="239.18.0.0/24"), "groups: need a multicast network"),
    (lambda c: c.update(port=70000), "port: 70000 is not a UDP port"),
    (lambda c: c["hosts"]["mon-1"]["access"].update(ssh="ssh x"),
     "hosts.mon-1.access: give exactly one of"),
    (lambda c: c["hosts"]["mon-1"]["access"].pop("token_file"),
     "hosts.mon-1.access: agent access needs token_file"),
    (lambda c: c["hosts"]["daq-pc"]["interfaces"]["lan"].update(address="10.0.0.300/24"),
     "hosts.daq-pc.interfaces.lan.address: '10.0.0.300/24' is not ADDRESS/PREFIX"),
    (lambda c: c["hosts"]["daq-pc"].update(capabilities=["root"]),
     "hosts.daq-pc.capabilities: ['root']: a list of nft, quiet"),
    (lambda c: c["roles"].update(far="nowhere"), "roles.far: no host 'nowhere' under hosts"),
    (lambda c: c["roles"].update(monitors="mon-1"), "roles.monitors: monitors is a list"),
    (lambda c: c["roles"].pop("daq"), "roles.daq: the DAQ host is required"),
    (lambda c: c["roles"].update(observer="laptop"), "roles: unknown keys ['observer']"),
    (lambda c: c.update(board={"kind": "port"}), "board.url: a real board needs its port"),
    (lambda c: c.update(board={"kind": "fpga"}), "board.kind: 'fpga': emulator or port"),
    (lambda c: c.update(switch={"kind": "linux-bridge", "host": "sw9", "ports": {}}),
     "switch.host: no host 'sw9' under hosts"),
    (lambda c: c.update(switch={"kind": "opaque", "settle": 600}), "switch.settle"),
    (lambda c: c.update(lease_ttl=5), "lease_ttl: 5: seconds a host's lease holds"),
])
def test_mistakes_are_named_with_their_place(edit, message: str) -> None:
    assert message in _broken(edit)


def test_a_real_board_port_is_kept() -> None:
    config = _example()
    config["board"] = {"kind": "port", "url": "/dev/ttyUSB0", "baudrate": 3000000}
    parsed = bench.parse(config)
    assert parsed["board"] == BoardSpec("port", "/dev/ttyUSB0", 3000000)
    assert not parsed["board"].has_truth


def test_unreadable_files_are_named(tmp_path) -> None:
    with pytest.raises(TopologyError, match=r"cannot read bench config .*absent\.yml"):
        bench.read(str(tmp_path / "absent.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("hosts: [unclosed\n")
    with pytest.raises(TopologyError, match=r"bad\.yml: not valid YAML"):
        bench.read(str(bad))
