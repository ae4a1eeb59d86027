"""Compressed inputs read as streams: ``.gz``, ``.xz``, ``.bz2``, ``.zst``; never unpacked to disk.

:func:`open_source` returns a binary file object with ``readline(limit)`` for any
source path (plain files are opened directly, at full speed). Decompression runs
in the reading process, one buffer at a time, so memory does not depend on the
file size. A truncated stream or a corrupt block raises :class:`InputError`
naming the file and the compressed byte offset near which it failed (exit code 2)
instead of a codec's traceback; the codecs used here cannot resynchronize after
a bad block, so there is nothing to skip to.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from megameta.errors import InputError

try:
    from zstandard import ZstdError
except ImportError:  # zstandard is only needed for .zst sources; check_codec_available says so
    ZstdError = OSError

CODECS = (".gz", ".xz", ".bz2", ".zst")
# What the codecs raise on a truncated stream (EOFError) or a corrupt block (the rest).
_STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error, ZstdError)
_CHUNK = 1 << 17


def split_codec(path: str | Path) -> tuple[str, str | None]:
    """(inner suffix, codec suffix or None): ``en.txt.xz`` -> (".txt", ".xz"), ``a.jsonl`` -> (".jsonl", None)."""
    p = Path(path)
    if p.suffix in CODECS:
        return Path(p.stem).suffix, p.suffix
    return p.suffix, None


class _Decompressing(io.RawIOBase):
    """A raw stream over one or more concatenated compressed members (gzip members, xz streams, zstd
    frames, bz2 streams); a file that ends inside a member raises EOFError.

    Drives the codec's incremental decompressor directly (all four have ``decompress``, ``eof`` and
    ``unused_data``): the standard library's file wrappers read through an 8 KiB buffer and run 2-3x
    slower here, and ``zstandard``'s ``stream_reader`` ends silently on a truncated frame.
    """

    def __init__(self, raw: BinaryIO, new: Callable[[], object]):
        self._raw, self._new = raw, new
        self._obj, self._in_member = new(), False
        self._buf, self._pos = b"", 0  # decompressed bytes not yet handed out start at _pos

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if self._in_member:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return 0
            out = []
            while chunk:
                self._in_member = True
                out.append(self._obj.decompress(chunk))
                chunk = b""
                if self._obj.eof:  # member finished: the rest of the chunk starts the next one
                    chunk, self._in_member = self._obj.unused_data, False
                    self._obj = self._new()
            self._buf, self._pos = b"".join(out), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _zstd() -> object:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


# codec -> a new incremental decompressor for one member
_DECOMPRESSORS: dict[str, Callable[[], object]] = {
    ".gz": lambda: zlib.decompressobj(wbits=31),  # gzip header and trailer (CRC, size) checked
    ".xz": lzma.LZMADecompressor,
    ".bz2": bz2.BZ2Decompressor,
    ".zst": _zstd,
}


class _Checked:
    """A decompressing reader whose codec errors become InputError naming the file and byte offset."""

    def __init__(self, path: Path, codec: str, raw: BinaryIO, stream: BinaryIO):
        self.path, self.codec, self._raw, self._stream = path, codec, raw, stream

    def readline(self, limit: int = -1) -> bytes:
        try:
            return self._stream.readline(limit)
        except _STREAM_ERRORS as e:
            what = "truncated" if isinstance(e, EOFError) else "corrupt"
            size = self.path.stat().st_size
            raise InputError(
                f"{self.path}: {what} {self.codec} stream near compressed byte {self._raw.tell():,} "
                f"of {size:,} ({e}); re-download or re-compress the file"
            ) from None

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> _Checked:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(path: str | Path) -> BinaryIO | _Checked:
    """A binary reader with ``readline(limit)`` over ``path``, decompressed on the fly by its suffix."""
    path = Path(path)
    codec = split_codec(path)[1]
    if codec is None:
        return open(path, "rb")
    raw = open(path, "rb")
    stream = io.BufferedReader(_Decompressing(raw, _DECOMPRESSORS[codec]), 1 << 20)
    return _Checked(path, codec, raw, stream)


def check_codec_available(path: str | Path) -> None:
    """InputError when ``path`` needs the optional ``zstandard`` package and it is missing."""
    if split_codec(path)[1] == ".zst":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise InputError(
                f"{path}: reading .zst needs the zstandard package (pip install zstandard)"
            ) from None
