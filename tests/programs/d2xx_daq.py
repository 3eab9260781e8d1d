"""A D2XX DAQ program in the manner of the AstroPix team's Nexys DAQ (``nexysio``): find the
board by description and serial prefix, open it by index, set the FTDI up, release the SPI
resets, then poll the read FIFO and store every non-empty read as ``INDEX<TAB>HEX``.

Usage: python d2xx_daq.py OUT.txt READOUTS [MAX_POLLS]
"""

import sys

import ftd2xx

NEXYS_USB_DESC = b"Digilent USB Device A"
NEXYS_USB_SER = b"210276"
SPI_CONFIG, SPI_READ_FIFO = 0x15, 0x18
READ_FIFO_EMPTY = 1 << 4


def open_nexys():
    serials = ftd2xx.listDevices(0)
    descriptions = ftd2xx.listDevices(2)
    if serials is None:
        sys.exit("No Devices found")
    for index, description in enumerate(descriptions):
        if description == NEXYS_USB_DESC and serials[index].startswith(NEXYS_USB_SER):
            handle = ftd2xx.open(index)
            handle.setTimeouts(1000, 1000)
            handle.setBitMode(0xFF, 0x00)
            handle.setBitMode(0xFF, 0x40)
            handle.setLatencyTimer(2)
            handle.setUSBParameters(64000, 64000)
            return handle
    sys.exit("Nexys not found")


def read_register(handle, register, num=1):
    handle.write(bytes([0x00, register, num >> 8, num & 0xFF]))
    answer = bytearray()
    while len(answer) < num:
        chunk = handle.read(num - len(answer))
        if not chunk:
            sys.exit(f"board did not answer a read of 0x{register:02x}")
        answer += chunk
    return bytes(answer)


def write_register(handle, register, value):
    handle.write(bytes([0x01, register, 0x00, 0x01, value]))


def main(out, readouts, max_polls=200_000):
    handle = open_nexys()
    with handle, open(out, "w") as stream:
        write_register(handle, SPI_CONFIG, 0x00)
        taken = 0
        for _ in range(max_polls):
            if taken >= readouts:
                break
            if read_register(handle, SPI_CONFIG)[0] & READ_FIFO_EMPTY:
                continue
            stream.write(f"{taken}\t{read_register(handle, SPI_READ_FIFO, 2048).hex()}\n")
            taken += 1
    return 0 if taken >= readouts else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:4])))
