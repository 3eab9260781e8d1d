"""An independent decoder of A-STEP streams, written from the spec's rules only (§4.2, §4.4):
walk by LEN (a byte above 16 is skipped), layer = byte 1, sensor frame from byte 2, FPGA
timestamp = the bytes after it; v4 fields from the big-endian 64-bit word. Frames whose
sensor header does not say payload 7 are not hits (the analysis keeps payload == 7)."""

from __future__ import annotations


def gray_decode(g: int) -> int:
    b = 0
    while g:
        b ^= g
        g >>= 1
    return b


def reference_hits(buf: bytes, byteorder: str = "big") -> list[dict]:
    hits, i = [], 0
    while i < len(buf):
        n = buf[i]
        if n > 16:
            i += 1
            continue
        frame = buf[i:i + n + 1]
        i += n + 1
        if len(frame) < 10 or frame[2] & 7 != 7:
            continue
        w = int.from_bytes(frame[2:10], "big")

        def bits(hi: int, lo: int, w: int = w) -> int:
            return (w >> lo) & ((1 << (hi - lo + 1)) - 1)

        ts1 = gray_decode(bits(44, 31) << 3 | bits(30, 28)) << 1 | bits(45, 45)
        ts2 = gray_decode(bits(21, 8) << 3 | bits(7, 5)) << 1 | bits(22, 22)
        hits.append({
            "layer": frame[1], "chip_id": bits(63, 59), "payload": bits(58, 56),
            "row": bits(55, 51), "column": bits(50, 46), "ts_dec1": ts1, "ts_dec2": ts2,
            "tot_total": ts2 - ts1 if ts2 > ts1 else 2**18 - 1 + ts2 - ts1,
            "fpga_ts": int.from_bytes(frame[10:], byteorder),
        })
    return hits


def an_v4_hits(buf: bytes) -> list[tuple[int, int, int]]:
    """astropix-analysis' v4 frame search (spec §4.5.2) with the LEN-driven walk the spec
    recommends: a frame starts where buf[i] == 0x0D, buf[i+1] & 0xF8 == 0 and
    buf[i+2] & 7 == 7; the FPGA timestamp is bytes 10-13, big-endian. Returns
    (layer, word, fpga_ts) per frame."""
    out, i = [], 0
    while i + 14 <= len(buf):
        if buf[i] == 0x0D and buf[i + 1] & 0xF8 == 0 and buf[i + 2] & 7 == 7:
            out.append((buf[i + 1], int.from_bytes(buf[i + 2:i + 10], "big"),
                        int.from_bytes(buf[i + 10:i + 14], "big")))
            i += 14
        else:
            i += 1
    return out


def an_v3_half_hits(buf: bytes) -> list[tuple[int, ...]]:
    """astropix-analysis' v3 binary search (spec §4.5.1) on one chunk: every ``0A 01``,
    ``0A 02``, ``0A 03`` pair, 11-byte slices, the FPGA timestamp little-endian. (Sorted here;
    the payloads of the test hold no 0x0A, so the team's quirks do not bite.) Returns
    (layer, chip, is_col, location, ts, tot, fpga_ts)."""
    starts = sorted(i for i in range(len(buf) - 1)
                    if buf[i] == 0x0A and buf[i + 1] in (1, 2, 3))
    out = []
    for i in starts:
        f = buf[i:i + 11]
        if len(f) < 11:
            continue
        out.append((f[1], f[2] >> 3, f[3] >> 7, f[3] & 0x3F, f[4], (f[5] & 0x0F) << 8 | f[6],
                    int.from_bytes(f[7:11], "little")))
    return out
