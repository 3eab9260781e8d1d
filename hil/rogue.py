"""A host sending bad traffic to the DAQ's group (case 7).

Run on the rogue host as ``python3 -c "$(cat rogue.py)" GROUP PORT --interface ADDR``: it
first listens to the group for one of the DAQ's datagrams (to forge its stream id and key id,
as an attacker on the network would), prints ``captured``, then sends ``--rounds`` rounds of
every kind in :data:`KINDS` and prints a JSON line with what it sent. Bounded in count and
time. The reason a keyed receiver counts each kind under is in :data:`KINDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.framing import HEADER, MAGIC, Kind, TransportKey, encode_datagram

#: kind -> the malformed counter of a receiver that has the key
KINDS = {
    "garbage": "bad_magic",  # random bytes
    "short": "truncated",  # magic and not even a header
    "bad_version": "bad_version",  # a future version
    "overlong": "length_mismatch",  # more bytes than the header declares
    "unsigned": "unauthenticated",  # the DAQ's stream id, no HMAC
    "forged": "bad_auth",  # the DAQ's stream and key id, HMAC under a guessed key
    "foreign_key": "unknown_key",  # HMAC under some other key
    "legacy": "unauthenticated",  # a bare readout (the legacy format has no HMAC)
}


def capture(group: str, port: int, interface: str, timeout: float) -> tuple:
    """Header fields of the first framed datagram heard on the group."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(group) + socket.inet_aton(interface))
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"rogue: nothing framed heard on {group}:{port} in {timeout} s")
            sock.settimeout(left)
            data = sock.recv(65536)
            if data[:4] == MAGIC and len(data) >= HEADER.size:
                return HEADER.unpack_from(data)
    finally:
        sock.close()


def datagrams(fields: tuple) -> dict[str, bytes]:
    """One datagram of each kind, forged from a captured header's fields."""
    stream_id, seq, readout_seq, key_id = fields[5], fields[6], fields[7], fields[13]
    readout = AstroPix4Readout(bytes([0xBC, 0xBC]) + bytes(6), readout_seq + 5,
                               time.time_ns()).to_bytes()
    ahead = seq + 5

    def data(key: TransportKey | None) -> bytes:
        return encode_datagram(Kind.DATA, stream_id, ahead, readout_seq + 5, readout,
                               count=1, key=key)

    valid = data(None)
    return {
        "garbage": b"\x00" + os.urandom(99),
        "short": MAGIC + os.urandom(10),
        "bad_version": valid[:4] + bytes([99]) + valid[5:],
        "overlong": valid + os.urandom(7),
        "unsigned": valid,
        "forged": data(TransportKey(os.urandom(32), key_id or 1)),
        "foreign_key": data(TransportKey.from_secret(os.urandom(32))),
        "legacy": readout,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rogue")
    parser.add_argument("group")
    parser.add_argument("port", type=int)
    parser.add_argument("--interface", required=True)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.004)
    parser.add_argument("--listen", type=float, default=20.0)
    args = parser.parse_args(argv)
    fields = capture(args.group, args.port, args.interface, args.listen)
    print("captured", flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.interface))
    sent = dict.fromkeys(KINDS, 0)
    for _ in range(args.rounds):
        for kind, raw in datagrams(fields).items():
            sock.sendto(raw, (args.group, args.port))
            sent[kind] += 1
            time.sleep(args.interval)
    sock.close()
    print(json.dumps({"sent": sent, "stream": f"{fields[5]:016x}", "key_id": fields[13]}),
          flush=True)


if __name__ == "__main__":
    main()
