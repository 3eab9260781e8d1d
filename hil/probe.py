"""Plain-socket multicast probes: check the network itself, independent of apx-hil.

Run on a host as ``python3 -c "$(cat probe.py)" send|recv ...`` (the suite passes this file's
source, so a bench host needs nothing but Python). ``recv`` prints ``joined`` once its socket
has joined the group, then one JSON line when done; ``send`` prints one JSON line.
Every loop is bounded by a count and a time limit.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import time

MAGIC = b"APXPROBE"
_SEQ = struct.Struct("<I")


def send(group: str, port: int, count: int, ttl: int, interface: str | None,
         interval: float, size: int) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    if interface:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    pad = bytes(max(0, size - len(MAGIC) - _SEQ.size))
    errors = 0
    for seq in range(count):
        try:
            sock.sendto(MAGIC + _SEQ.pack(seq) + pad, (group, port))
        except OSError:
            errors += 1
        if interval:
            time.sleep(interval)
    sock.close()
    return {"sent": count - errors, "errors": errors}


def recv(group: str, port: int, interface: str | None, count: int, duration: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Bound to the group: datagrams of other groups on the same port stay out.
    sock.bind((group, port))
    mreq = socket.inet_aton(group) + socket.inet_aton(interface or "0.0.0.0")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    print("joined", flush=True)
    seqs: set[int] = set()
    sources: set[str] = set()
    other = 0
    deadline = time.monotonic() + duration
    while len(seqs) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(65536)
        except TimeoutError:
            break
        if data.startswith(MAGIC) and len(data) >= len(MAGIC) + _SEQ.size:
            seqs.add(_SEQ.unpack_from(data, len(MAGIC))[0])
            sources.add(source[0])
        else:
            other += 1
    sock.close()
    return {"received": len(seqs), "sources": sorted(sources), "other": other}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="probe")
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("send")
    r = sub.add_parser("recv")
    for p in (s, r):
        p.add_argument("group")
        p.add_argument("port", type=int)
        p.add_argument("--interface")
        p.add_argument("--count", type=int, default=100)
    s.add_argument("--ttl", type=int, default=1)
    s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--size", type=int, default=64)
    r.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.what == "send":
        out = send(args.group, args.port, args.count, args.ttl, args.interface,
                   args.interval, args.size)
    else:
        out = recv(args.group, args.port, args.interface, args.count, args.duration)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
