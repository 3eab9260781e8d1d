"""The team's run sequence (spec §6, ``main.py`` -> ``astropixrun.py``) over an
:class:`~astropix_hil.boards.astep.link.AstepLink`, up to the readout loop.

Differences from ``main.py``, on purpose and documented in docs/astep.rst:

* the firmware id is checked (``main.py`` only reads it), and the firmware version chooses
  the FPGA timestamp byte order (big-endian from build 25112401 on);
* CHIP_VERSION is written (4 for v4) so that the wrong-length counter and the v4 clocks are
  right (``main.py`` never writes it, spec §7 #7);
* the chip configuration is written only when given: a
  :class:`~astropix_hil.chipconfig.ChipConfiguration` (a YAML file) sent by shift register
  or SPI exactly as the team's ``chips_reset_configure`` does (:mod:`.configstream`), the
  same configuration to every chip of every chain; or raw LAYERS_SR_OUT bytes (or a callable
  making them) for a stream made elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ...chipconfig import ChipConfiguration
from ...errors import LinkError
from .configstream import METHODS, spi_frames, sr_streams
from .link import AstepLink
from .registers import (
    CORE_CLOCK_HZ,
    FIRST_BIG_ENDIAN_VERSION,
    READOUT,
    STATUS_INTERRUPTN,
    layer_reg,
    reg,
)

log = logging.getLogger(__name__)

#: Chip configuration: a configuration (from YAML), the LAYERS_SR_OUT byte stream, or
#: ``f(layers, chips) -> bytes``.
ChipConfig = ChipConfiguration | bytes | Callable[[int, int], bytes] | None
MOSI_CHUNK = 256


@dataclass
class SequenceInfo:
    """What the run sequence found and did."""

    firmware_id: int
    firmware_version: int
    fpga_ts_byteorder: str
    layers: int
    chips: int
    config_bytes: int = 0
    #: How the configuration went: "sr", "spi", "sr-raw" (bytes given), or None (not sent).
    config_method: str | None = None
    #: Bytes the start-up flush read from the FIFO and discarded, and the non-empty reads.
    flushed_bytes: int = 0
    flush_reads: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def check_firmware(firmware_id: int) -> None:
    """Raise unless ``firmware_id`` is an A-STEP build (0xAB0v, 0xAC0v, 0xAC1v, sim 0xFF00)."""
    family, version = firmware_id >> 4, firmware_id & 0xF
    if firmware_id == 0xFF00 or (family in (0xAB0, 0xAC0, 0xAC1) and version in (2, 3, 4)):
        return
    raise LinkError(f"HK_FIRMWARE_ID is 0x{firmware_id:08x}: not an A-STEP firmware "
                    f"(expected 0x0000AB0v, 0x0000AC0v or 0x0000AC1v)")


def mosi_write(link: AstepLink, layer: int, data: bytes, timeout: float = 5.0) -> None:
    """The team's MOSI procedure: chunks of 256 bytes, waiting for the FIFO to empty."""
    size_reg, mosi = layer_reg("MOSI_WRITE_SIZE", layer), layer_reg("MOSI", layer)
    for i in range(0, len(data), MOSI_CHUNK):
        link.read_value(size_reg)
        link.write_registers(mosi.address, data[i:i + MOSI_CHUNK])
        deadline = time.monotonic() + timeout
        while link.read_value(size_reg):
            if time.monotonic() > deadline:
                raise LinkError(f"LAYER_{layer}_MOSI did not empty within {timeout} s")
            time.sleep(0.001)


def configure_chips(link: AstepLink, config: ChipConfiguration, *, layers: int, chips: int,
                    method: str = "sr") -> int:
    """Send ``config`` to every chip of ``layers`` chains of ``chips`` (spec §6.4, step 13);
    return the bytes written to LAYERS_SR_OUT or to the MOSI FIFOs."""
    if method == "sr":
        writes = sr_streams(config, layers, chips)
        for stream in writes:  # one merged write each (split at 65535 bytes by the link)
            link.write_registers(reg("LAYERS_SR_OUT").address, stream)
        return sum(map(len, writes))
    ctrl0 = layer_reg("CFG_CTRL", 0)
    sent = 0
    for frame in spi_frames(config, chips):
        link.write_value(ctrl0, 0x15 | 0x08)  # layersSelectSPI
        for n in range(layers):
            mosi_write(link, n, frame)
            sent += len(frame)
        link.write_value(ctrl0, 0x15)  # layersDeselectSPI
    return sent


def start_run(link: AstepLink, *, layers: int = 1, chips: int = 1, ts_freq: float = 1e6,
              spi_freq: float = 1e6, chip_version: int = 4, reset_delay: float = 0.5,
              chip_config: ChipConfig = None, config_method: str = "sr") -> SequenceInfo:
    """Open-to-readout: everything ``main.py`` does before its read loop (spec §6.1-§6.5).

    ``config_method`` ("sr" or "spi") chooses how a :class:`ChipConfiguration` is sent."""
    if not 1 <= layers <= 3 or not 1 <= chips <= 4:
        raise ValueError("layers must be 1..3 and chips 1..4")
    if config_method not in METHODS:
        raise ValueError(f"config_method {config_method!r}: must be one of {METHODS}")
    # 6.1: firmware identity (checked) and version (chooses the timestamp byte order).
    firmware_id = link.read_value(reg("HK_FIRMWARE_ID"))
    check_firmware(firmware_id)
    version = link.read_value(reg("HK_FIRMWARE_VERSION"))
    order = "big" if version >= FIRST_BIG_ENDIAN_VERSION else "little"
    info = SequenceInfo(firmware_id, version, order, layers, chips)
    # 6.2: clocks and timestamps.
    clock = reg("CLOCK_CTRL")
    link.write_value(clock, link.read_value(clock) | 0x08)
    link.write_value(clock, link.read_value(clock) | 0x10)
    link.write_value(reg("LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH"), int(CORE_CLOCK_HZ / ts_freq))
    link.write_value(reg("LAYERS_FPGA_TIMESTAMP_CTRL"), 0x13, verify=True)
    link.write_value(reg("SPI_LAYERS_CKDIVIDER"), int(40e6 / (2 * spi_freq)) - 1)
    link.write_value(reg("CHIP_VERSION"), chip_version, verify=True)
    # 6.3: autoread tail.
    link.write_value(reg("LAYERS_CFG_NODATA_CONTINUE"), 4 + chips)
    # 6.4: reset the chips (layer 0's pin is the shared one), readout off.
    ctrl = [layer_reg("CFG_CTRL", n) for n in range(3)]
    link.write_value(ctrl[0], link.read_value(ctrl[0]) | 0x02)
    time.sleep(reset_delay)  # the reset pulse length of the team's XML (RSTdelay)
    link.write_value(ctrl[0], link.read_value(ctrl[0]) & ~0x02)
    disable = [0x15, 0x14, 0x14]
    for n in range(3):
        link.write_value(ctrl[n], disable[n])
    # Chip ids along each daisy chain: the routing frame, with chip select on.
    link.write_value(ctrl[0], disable[0] | 0x08)
    for n in range(layers):
        mosi_write(link, n, bytes([0x40]) + bytes(2 * chips))
    link.write_value(ctrl[0], disable[0], verify=True)
    # Chip configuration, when given.
    if isinstance(chip_config, ChipConfiguration):
        info.config_bytes = configure_chips(link, chip_config, layers=layers, chips=chips,
                                            method=config_method)
        info.config_method = config_method
    elif chip_config is not None:
        stream = chip_config(layers, chips) if callable(chip_config) else bytes(chip_config)
        link.write_registers(reg("LAYERS_SR_OUT").address, stream)
        info.config_bytes, info.config_method = len(stream), "sr-raw"
    # 6.5: flush the chips and the FIFO, then readout on.
    status = [layer_reg("STATUS", n) for n in range(3)]
    for n in range(layers):
        link.write_value(ctrl[n], 0x1C)
        mosi_write(link, n, bytes(128))
        tries = 0
        while not link.read_value(status[n]) & STATUS_INTERRUPTN and tries < 20:
            mosi_write(link, n, bytes(128))
            tries += 1
        link.write_value(ctrl[n], disable[n])
    size = link.read_size()
    if size:
        link.read_register(READOUT, size, increment=False)
        info.flushed_bytes, info.flush_reads = size, 1
    for n in range(layers):
        link.write_value(ctrl[n], 0x09 if n == 0 else 0x08)
    link.write_value(ctrl[0], 0x08, verify=True)
    # Stop (spec §6.8): readout off when the link closes.
    from .protocol import register_write

    link.on_close = b"".join(register_write(ctrl[n].address, disable[n], 1) for n in range(3))
    log.info("A-STEP run started: %s", info)
    return info


__all__ = ["ChipConfig", "SequenceInfo", "check_firmware", "configure_chips", "mosi_write",
           "start_run"]
