"""``apx-hil ports``: list candidate board ports (FTDI USB-serial devices)."""

from __future__ import annotations

import argparse
import json

from serial.tools import list_ports

FTDI_VID = 0x0403


def candidate_ports(all_ports: bool = False) -> list[dict]:
    """Serial ports pyserial sees; FTDI ones (vendor 0x0403) unless ``all_ports``."""
    found = []
    for info in sorted(list_ports.comports(), key=lambda p: p.device):
        if not all_ports and info.vid != FTDI_VID:
            continue
        found.append({
            "device": info.device,
            "description": info.description,
            "serial_number": info.serial_number,
            "vid_pid": None if info.vid is None else f"{info.vid:04x}:{info.pid:04x}",
            "location": info.location,
            "profiles": ["nexys", "astep"] if info.vid == FTDI_VID else [],
        })
    return found


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ports", help="list candidate FTDI ports for the board",
        description="List serial ports of FTDI devices (USB vendor 0x0403) as pyserial sees "
                    "them, to pass to 'apx-hil daq --port'. The Nexys board's FT2232H "
                    "synchronous FIFO is opened with --port ftdififo://ftdi:2232h/1 instead. "
                    "Each port lists the profiles it is a candidate for: FTDI UARTs serve "
                    "both nexys and astep (the A-STEP firmware's 921600 Bd UART; the team's "
                    "software takes the first FTDI port on Linux, the last on Windows).")
    parser.add_argument("--all", action="store_true", help="list every serial port")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ports = candidate_ports(args.all)
    if args.json:
        print(json.dumps(ports, indent=2))
    elif not ports:
        print("no FTDI serial ports found" + ("" if args.all else " (--all lists every port)"))
    else:
        for port in ports:
            print(f"{port['device']}\t{port['vid_pid'] or '-'}\t{port['serial_number'] or '-'}"
                  f"\t{port['description']}\t{','.join(port['profiles']) or '-'}")
    return 0
