"""Container sanity, before any decoder sees a file: headers that cannot be true are refused.

Native decoders can take the whole process down: decord throws `std::bad_alloc` and aborts
(SIGABRT) on an mp4 whose time-to-sample table claims 0x7FFFFFF0 samples. `check_container`
reads the MP4 box tree / the WebM EBML header first and refuses sample tables that cannot fit in
the file, naming the reason, as one DecodeError (counted like any unreadable file, so
`max_failure_fraction` applies). `check_file` is what every reader calls first.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator

from .errors import DecodeError


def check_file(path: str | os.PathLike, *, check_header: bool = True) -> str:
    """The path as a string, once it names a non-empty file whose container header can be true
    (`check_container`); else DecodeError saying which. Every reader calls this first."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        # decord can hang on empty files; there is nothing to decode anyway.
        raise DecodeError(f"video file is empty: {path}")
    if check_header:
        check_container(path)
    return path


# ----- container sanity, before any decoder sees the file -------------------------------------
# Top-level ISO-BMFF (MP4/MOV) box types a file may start with.
_ISO_FIRST = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp", b"pnot", b"uuid"}
# Boxes whose payload is a list of boxes, on the way from moov down to the sample tables.
_ISO_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
_MAX_MOOV = 1 << 30  # a moov holds tables of a few bytes per sample; 1 GiB is hours of video


def check_container(path: str | os.PathLike) -> None:
    """Refuse an MP4 or WebM file whose container header cannot be true, naming the reason.

    MP4: the box tree from `moov` down to each track's sample tables (`stts`, `stsz`, `stsc`,
    `stco`/`co64`, `stss`, `ctts`) is read; entry counts must fit in their boxes, the time-to-
    sample and composition tables may not count more samples than the sample-size table sizes,
    and no table may claim more samples than the file has bytes. These are the counts decoders allocate for up front (decord
    aborts the process on 0x7FFFFFF0). WebM/Matroska: the EBML header and the Segment's
    top-level elements before the first Cluster must parse and fit in the file. Other formats,
    and truncated media data (the decoders handle those), pass; the decoders judge the rest.
    Reads only headers (the moov box, a few KiB per minute of video).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if len(head) >= 8 and head[4:8] in _ISO_FIRST:
            _check_isobmff(f, size, path)
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            _check_ebml(f, size, path)


def _corrupt(path: str, reason: str) -> DecodeError:
    return DecodeError(f"corrupt or crafted container header in {path}: {reason}; the file was "
                       f"not handed to a decoder")


def _iso_boxes(read_at: Callable[[int, int], bytes], start: int, end: int, path: str,
               where: str) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, offset, header length, size) of the boxes in [start, end); size 0 runs to `end`."""
    pos = start
    while pos + 8 <= end:
        size, typ = struct.unpack(">I4s", read_at(pos, 8))
        header = 8
        if size == 1:
            raw = read_at(pos + 8, 8)
            if len(raw) < 8:
                return
            size, header = struct.unpack(">Q", raw)[0], 16
        elif size == 0:
            size = end - pos
        name = typ.decode("latin-1")
        if size < header:
            raise _corrupt(path, f"box {name!r} at byte {pos} {where} has size {size}, less than its "
                                 f"own header")
        yield typ, pos, header, size
        pos += size


def _check_isobmff(f, file_size: int, path: str) -> None:
    def read_file(pos: int, n: int) -> bytes:
        f.seek(pos)
        return f.read(n)

    moov = None
    for typ, pos, header, size in _iso_boxes(read_file, 0, file_size, path, "at the top level"):
        if typ == b"moov":
            if pos + size > file_size:
                raise _corrupt(path, f"the moov box (the index of every sample) claims {size} bytes "
                                     f"but only {file_size - pos} remain in the file: truncated")
            if size > _MAX_MOOV:
                raise _corrupt(path, f"the moov box claims {size} bytes")
            moov = read_file(pos + header, size - header)
            break
    if moov is None:  # fragmented or truncated files: the decoders say what they make of them
        return

    def read_moov(pos: int, n: int) -> bytes:
        return moov[pos : pos + n]

    track = 0

    def walk(start: int, end: int, trail: str) -> None:
        nonlocal track
        tables: dict[bytes, tuple[int, int]] = {}
        for typ, pos, header, size in _iso_boxes(read_moov, start, end, path, f"in {trail or 'moov'}"):
            if pos + size > end:
                raise _corrupt(path, f"box {typ.decode('latin-1')!r} in {trail or 'moov'} claims "
                                     f"{size} bytes, more than its parent holds ({end - pos})")
            if typ == b"trak":
                track += 1
            if typ in _ISO_CONTAINERS:
                walk(pos + header, pos + size, f"{trail}/{typ.decode()}" if trail else typ.decode())
            else:
                tables[typ] = (pos + header, pos + size)
        if trail.endswith("stbl"):
            _check_sample_tables(moov, tables, file_size, path, f"track {track}")

    walk(0, len(moov), "moov")


def _check_sample_tables(moov: bytes, tables: dict, file_size: int, path: str, track: str) -> None:
    """The counts of one track's sample tables, against their boxes and against each other."""

    def counted(name: bytes, entry_bytes: int, count_at: int = 4) -> tuple[int, int, int] | None:
        if name not in tables:
            return None
        start, end = tables[name]
        if end - start < count_at + 4:
            raise _corrupt(path, f"{track}: the {name.decode()} box is too short for its entry count")
        count = struct.unpack_from(">I", moov, start + count_at)[0]
        room = end - start - count_at - 4
        if entry_bytes and count * entry_bytes > room:
            raise _corrupt(path, f"{track}: the {name.decode()} table claims {count} entries of "
                                 f"{entry_bytes} bytes but its box holds {room} bytes")
        return count, start + count_at + 4, end

    sizes = None
    if b"stsz" in tables:
        start, end = tables[b"stsz"]
        if end - start < 12:
            raise _corrupt(path, f"{track}: the stsz box is too short")
        constant, n = struct.unpack_from(">II", moov, start + 4)
        if constant == 0 and n * 4 > end - start - 12:
            raise _corrupt(path, f"{track}: the sample-size table (stsz) claims {n} samples but its "
                                 f"box holds sizes for {(end - start - 12) // 4}")
        if constant and n * constant > file_size:
            raise _corrupt(path, f"{track}: the sample-size table (stsz) claims {n} samples of "
                                 f"{constant} bytes, more than the file's {file_size} bytes")
        sizes = n
    elif b"stz2" in tables:
        sizes = counted(b"stz2", 0, count_at=8)[0]

    stts = counted(b"stts", 8)
    if stts is not None:
        count, at, _ = stts
        total = sum(struct.unpack_from(">I", moov, at + 8 * i)[0] for i in range(count))
        # More times than sizes: the count a decoder allocates for cannot be real. (Fewer is
        # left to the decoders: muxers get the tail wrong and FFmpeg copes.)
        if sizes is not None and total > sizes:
            raise _corrupt(path, f"{track}: the time-to-sample table (stts) counts {total} samples "
                                 f"but the sample-size table (stsz) lists {sizes}")
        if total > file_size:
            raise _corrupt(path, f"{track}: the time-to-sample table (stts) counts {total} samples, "
                                 f"more than the file's {file_size} bytes")
    ctts = counted(b"ctts", 8)
    if ctts is not None and sizes is not None:
        count, at, _ = ctts
        total = sum(struct.unpack_from(">I", moov, at + 8 * i)[0] for i in range(count))
        if total > sizes:
            raise _corrupt(path, f"{track}: the composition-offset table (ctts) counts {total} "
                                 f"samples but the sample-size table (stsz) lists {sizes}")
    for name, entry in ((b"stsc", 12), (b"stco", 4), (b"co64", 8), (b"stss", 4)):
        got = counted(name, entry)
        if got is not None and sizes is not None and name == b"stss" and got[0] > sizes:
            raise _corrupt(path, f"{track}: the sync-sample table (stss) lists {got[0]} keyframes "
                                 f"of only {sizes} samples")


def _ebml_vint(f, *, is_id: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at the file's position: (value, length); None: unknown
    size (all value bits set). Raises ValueError on an invalid leading byte or end of file."""
    first = f.read(1)
    if not first:
        raise ValueError("the file ends inside an element header")
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError(f"invalid EBML length byte 0x{b:02x}")
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        raise ValueError("the file ends inside an element header")
    raw = int.from_bytes(first + rest, "big")
    if is_id:
        return raw, length
    value = raw & ((1 << (7 * length)) - 1)
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _check_ebml(f, file_size: int, path: str) -> None:
    try:
        f.seek(0)
        _, _ = _ebml_vint(f, is_id=True)
        header_size, _ = _ebml_vint(f, is_id=False)
        if header_size is None or f.tell() + header_size > file_size:
            raise _corrupt(path, f"the EBML header claims {header_size} bytes, more than the file")
        f.seek(f.tell() + header_size)
        seg_id, _ = _ebml_vint(f, is_id=True)
        if seg_id != 0x18538067:
            raise _corrupt(path, f"the EBML header is followed by element 0x{seg_id:x}, not a Segment")
        _ebml_vint(f, is_id=False)  # a truncated file's Segment may overrun; the decoders cope
        # Top-level elements up to the first Cluster (SeekHead, Info, Tracks, Cues, ...): the
        # headers a decoder reads before any frame, so they must lie inside the file.
        while f.tell() < file_size:
            at = f.tell()
            eid, _ = _ebml_vint(f, is_id=True)
            if eid == 0x1F43B675:  # Cluster: media data from here on
                return
            esize, _ = _ebml_vint(f, is_id=False)
            if esize is None:
                raise _corrupt(path, f"element 0x{eid:x} at byte {at} has an unknown size")
            if f.tell() + esize > file_size:
                raise _corrupt(path, f"element 0x{eid:x} at byte {at} claims {esize} bytes, more "
                                     f"than the {file_size - f.tell()} left in the file")
            f.seek(f.tell() + esize)
    except ValueError as e:
        raise _corrupt(path, f"invalid EBML ({e})") from None
