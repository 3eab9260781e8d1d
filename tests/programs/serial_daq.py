"""A pyserial DAQ program in the manner of the AstroPix team's A-STEP software: open the first
port pyserial lists as an FTDI device, then (Nexys register protocol) release the SPI resets,
poll the read FIFO and store every non-empty read as ``INDEX<TAB>HEX``.

Usage: python serial_daq.py OUT.txt READOUTS [MAX_POLLS]
"""

import sys

import serial
from serial.tools import list_ports

SPI_CONFIG, SPI_READ_FIFO = 0x15, 0x18
READ_FIFO_EMPTY = 1 << 4


def first_ftdi_port():
    for port in list_ports.comports():
        if port.manufacturer == "FTDI":
            return port.device
    sys.exit("no FTDI serial port found")


def read_register(port, register, num=1):
    port.write(bytes([0x00, register, num >> 8, num & 0xFF]))
    answer = port.read(num)
    if len(answer) != num:
        sys.exit(f"board did not answer a read of 0x{register:02x}")
    return answer


def main(out, readouts, max_polls=200_000):
    with serial.Serial(first_ftdi_port(), 921600, timeout=1) as port, open(out, "w") as stream:
        port.write(bytes([0x01, SPI_CONFIG, 0x00, 0x01, 0x00]))
        taken = 0
        for _ in range(max_polls):
            if taken >= readouts:
                break
            if read_register(port, SPI_CONFIG)[0] & READ_FIFO_EMPTY:
                continue
            stream.write(f"{taken}\t{read_register(port, SPI_READ_FIFO, 2048).hex()}\n")
            taken += 1
    return 0 if taken >= readouts else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:4])))
