"""A pyserial DAQ program in the manner of the AstroPix team's A-STEP software on Linux: open
the first port pyserial lists with manufacturer "FTDI" at 921600 Bd, check the firmware, turn
layer 0's readout on (no reset, no hold, autoread), then poll the readout FIFO's byte count
(0xA4) and read that many bytes (0xA3), appending them to a raw ``.bin`` as their main.py does.

Usage: python astep_serial_daq.py OUT.bin BYTES [MAX_POLLS]
"""

import sys

import serial
from serial.tools import list_ports


def first_ftdi_port():
    for port in list_ports.comports():
        if port.manufacturer == "FTDI":
            return port.device
    sys.exit("no FTDI serial port found")


def read(port, header, address, length):
    port.write(bytes([header, address]) + length.to_bytes(2, "little"))
    reply = port.read(length)
    if len(reply) != length:
        sys.exit(f"board did not answer a read of 0x{address:02x}")
    return reply


def main(out, wanted, max_polls=20_000):
    with serial.Serial(first_ftdi_port(), 921600, timeout=3) as port, open(out, "wb") as raw:
        firmware_id = int.from_bytes(read(port, 0x06, 0x00, 4), "little")
        if firmware_id != 0xAB04:
            sys.exit(f"unexpected firmware id 0x{firmware_id:x}")
        port.write(bytes.fromhex("05af040050000000" "0576020013" "00" "011f010008"))
        taken = 0
        for _ in range(max_polls):
            if taken >= wanted:
                break
            size = int.from_bytes(read(port, 0x06, 0xA4, 4), "little")
            if size:
                raw.write(read(port, 0x02, 0xA3, min(size, 4096)))
                taken += min(size, 4096)
    return 0 if taken >= wanted else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:4])))
