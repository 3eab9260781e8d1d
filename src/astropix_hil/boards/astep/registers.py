"""The A-STEP register map as data (spec §2): name, address, width, access, reset, fields.

Shared by the virtual board (:mod:`astropix_hil.boards.astep.board`) and the driver
(:mod:`astropix_hil.boards.astep.link`, :mod:`astropix_hil.boards.astep.sequence`).
Addresses are those of the generated ``astep24_3l_top`` module (firmware ``main`` 2026-04-09);
the stale 2023 ``target-gecco-astropix3`` map is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Access(Enum):
    """How software may use a register."""

    RO = "ro"          # read-only
    RW = "rw"          # read/write
    CNT = "cnt"        # counter that software may overwrite
    WFIFO = "w-fifo"   # push on write
    RFIFO = "r-fifo"   # pop on read


@dataclass(frozen=True)
class Register:
    """One register: ``width`` bytes from ``address`` (little-endian on the wire)."""

    name: str
    address: int
    width: int
    access: Access
    reset: int = 0
    #: Bit fields: name -> (lsb, width).
    fields: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    #: Bits software cannot write (status bits inside a read/write register).
    ro_bits: int = 0

    @property
    def addresses(self) -> range:
        return range(self.address, self.address + self.width)

    def field(self, value: int, name: str) -> int:
        """The value of field ``name`` in register value ``value``."""
        lsb, width = self.fields[name]
        return (value >> lsb) & ((1 << width) - 1)


LAYER_CFG_FIELDS = {"hold": (0, 1), "reset": (1, 1), "disable_autoread": (2, 1), "cs": (3, 1),
                    "disable_miso": (4, 1), "loopback": (5, 1)}
TIMESTAMP_CTRL_FIELDS = {"enable": (0, 1), "use_divider": (1, 1), "use_tlu": (2, 1),
                         "tlu_busy_on_t0": (3, 1), "timestamp_size": (4, 2),
                         "force_value": (6, 1), "force_lsb_0": (7, 1)}
CLOCK_CTRL_FIELDS = {"ext_clk_enable": (0, 1), "ext_clk_differential": (1, 1),
                     "current_clk": (2, 1), "sample_clock_enable": (3, 1),
                     "timestamp_clock_enable": (4, 1)}

# Layer control bits (LAYER_n_CFG_CTRL).
HOLD, RESET, DISABLE_AUTOREAD, CS, DISABLE_MISO, LOOPBACK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
#: LAYER_n_STATUS bits: interruptn (0 = the sensor has data), frame_decoding.
STATUS_INTERRUPTN, STATUS_FRAME_DECODING = 0x01, 0x02

#: HK_FIRMWARE_ID of a Nexys/Gecco build for AstroPix v4 (0xAB0v).
FIRMWARE_ID_GECCO_V4 = 0x0000AB04
#: HK_FIRMWARE_VERSION (YYMMDDII) of the emulated build: after the big-endian timestamp change.
FIRMWARE_VERSION = 26040901
#: First firmware build whose frames carry a big-endian FPGA timestamp (spec §3.3, §8 Q1).
FIRST_BIG_ENDIAN_VERSION = 25112401


def _layer(n: int) -> list[Register]:
    return [
        Register(f"LAYER_{n}_CFG_CTRL", 0x1F + n, 1, Access.RW, 0x07, LAYER_CFG_FIELDS),
        Register(f"LAYER_{n}_STATUS", 0x22 + n, 1, Access.RO, 0x01,
                 {"interruptn": (0, 1), "frame_decoding": (1, 1)}),
        Register(f"LAYER_{n}_STAT_FRAME_COUNTER", 0x25 + 4 * n, 4, Access.CNT),
        Register(f"LAYER_{n}_STAT_IDLE_COUNTER", 0x31 + 4 * n, 4, Access.CNT),
        Register(f"LAYER_{n}_STAT_WRONGLENGTH_COUNTER", 0x3D + 4 * n, 4, Access.CNT),
        Register(f"LAYER_{n}_MOSI", 0x49 + 5 * n, 1, Access.WFIFO),
        Register(f"LAYER_{n}_MOSI_WRITE_SIZE", 0x4A + 5 * n, 4, Access.RO),
        Register(f"LAYER_{n}_LOOPBACK_MISO", 0x58 + 5 * n, 1, Access.WFIFO),
        Register(f"LAYER_{n}_LOOPBACK_MISO_WRITE_SIZE", 0x59 + 5 * n, 4, Access.RO),
        Register(f"LAYER_{n}_LOOPBACK_MOSI", 0x67 + 5 * n, 1, Access.RFIFO),
        Register(f"LAYER_{n}_LOOPBACK_MOSI_READ_SIZE", 0x68 + 5 * n, 4, Access.RO),
    ]


REGISTERS: tuple[Register, ...] = (
    Register("HK_FIRMWARE_ID", 0x00, 4, Access.RO, FIRMWARE_ID_GECCO_V4),
    Register("HK_FIRMWARE_VERSION", 0x04, 4, Access.RO, FIRMWARE_VERSION),
    Register("CHIP_VERSION", 0x08, 1, Access.RW, 0x03),
    Register("CLOCK_CTRL", 0x09, 1, Access.RW, 0x02, CLOCK_CTRL_FIELDS, ro_bits=0x04),
    Register("HK_XADC_TEMPERATURE", 0x0A, 2, Access.RO, 0x9A00),
    Register("HK_XADC_VCCINT", 0x0C, 2, Access.RO, 0x5550),
    Register("HK_CONVERSION_TRIGGER", 0x0E, 4, Access.CNT),
    Register("HK_STAT_CONVERSIONS_COUNTER", 0x12, 4, Access.RO),
    Register("HK_CTRL", 0x16, 1, Access.RW, 0x10),
    Register("HK_ADCDAC_MOSI_FIFO", 0x17, 1, Access.WFIFO),
    Register("HK_ADC_MISO_FIFO", 0x18, 1, Access.RFIFO),
    Register("HK_ADC_MISO_FIFO_READ_SIZE", 0x19, 4, Access.RO),
    Register("SPI_LAYERS_CKDIVIDER", 0x1D, 1, Access.RW, 0x04),
    Register("SPI_HK_CKDIVIDER", 0x1E, 1, Access.RW, 0x04),
    *(reg for n in range(3) for reg in _layer(n)),
    Register("LAYERS_FPGA_TIMESTAMP_CTRL", 0x76, 2, Access.RW, 0x0010, TIMESTAMP_CTRL_FIELDS),
    Register("LAYERS_FPGA_TIMESTAMP_DIVIDER", 0x78, 4, Access.CNT),
    Register("LAYERS_FPGA_TIMESTAMP_COUNTER", 0x7C, 8, Access.RO),
    Register("LAYERS_FPGA_TIMESTAMP_FORCED", 0x84, 8, Access.RW),
    Register("LAYERS_TLU_TRIGGER_DELAY", 0x8C, 2, Access.RW, 2),
    Register("LAYERS_TLU_BUSY_DURATION", 0x8E, 2, Access.RW, 16),
    Register("LAYERS_CFG_NODATA_CONTINUE", 0x90, 1, Access.RW, 5),
    Register("LAYERS_SR_OUT", 0x91, 1, Access.RW),
    Register("LAYERS_SR_IN", 0x92, 1, Access.RO),
    Register("LAYERS_SR_RB_CTRL", 0x93, 1, Access.RW),
    Register("LAYERS_SR_CRC", 0x94, 6, Access.RO),
    Register("LAYERS_SR_BYTES", 0x9A, 1, Access.RFIFO),
    Register("LAYERS_SR_BYTES_READ_SIZE", 0x9B, 4, Access.RO),
    Register("LAYERS_INJ_CTRL", 0x9F, 1, Access.RW, 0x06,
             {"reset": (0, 1), "suspend": (1, 1), "synced": (2, 1), "trigger": (3, 1),
              "write": (4, 1), "done": (5, 1), "running": (6, 1)}, ro_bits=0x60),
    Register("LAYERS_INJ_WADDR", 0xA0, 1, Access.RW),
    Register("LAYERS_INJ_WDATA", 0xA1, 1, Access.RW),
    Register("LAYERS_READOUT_CTRL", 0xA2, 1, Access.RW, 0x01, {"packet_mode": (0, 1)}),
    Register("LAYERS_READOUT", 0xA3, 1, Access.RFIFO),
    Register("LAYERS_READOUT_READ_SIZE", 0xA4, 4, Access.RO),
    Register("IO_CTRL", 0xA8, 1, Access.RW, 0x18),
    Register("IO_LED", 0xA9, 1, Access.RW),
    Register("GECCO_SR_CTRL", 0xAA, 1, Access.RW),
    Register("HK_CONVERSION_TRIGGER_MATCH", 0xAB, 4, Access.RW, 10),
    Register("LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH", 0xAF, 4, Access.RW, 4),
)

#: Registers by name.
BY_NAME: dict[str, Register] = {reg.name: reg for reg in REGISTERS}
#: The register holding each decoded address (every byte of multi-byte registers).
BY_ADDRESS: dict[int, Register] = {a: reg for reg in REGISTERS for a in reg.addresses}
#: The highest address with a read decoder (the last byte of 0xAF).
LAST_ADDRESS = 0xB2
assert max(BY_ADDRESS) == LAST_ADDRESS


def reg(name: str) -> Register:
    """The register called ``name``."""
    return BY_NAME[name]


def layer_reg(kind: str, layer: int) -> Register:
    """``LAYER_<layer>_<kind>``, e.g. ``layer_reg("CFG_CTRL", 0)``."""
    return BY_NAME[f"LAYER_{layer}_{kind}"]


READOUT = BY_NAME["LAYERS_READOUT"].address
READ_SIZE = BY_NAME["LAYERS_READOUT_READ_SIZE"].address
#: The readout FIFO's depth in bytes (production builds).
READOUT_FIFO_BYTES = 16384
#: The per-layer MOSI/MISO FIFO depth.
LAYER_FIFO_BYTES = 1024
#: Core clock of the FPGA (Hz): the timestamp divider counts its cycles.
CORE_CLOCK_HZ = 80_000_000

__all__ = [
    "BY_ADDRESS", "BY_NAME", "CORE_CLOCK_HZ", "LAYER_FIFO_BYTES", "READOUT", "READOUT_FIFO_BYTES",
    "READ_SIZE", "REGISTERS", "Access", "Register", "layer_reg", "reg",
]
