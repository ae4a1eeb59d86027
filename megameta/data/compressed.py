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
import gzip
import io
import lzma
import zlib
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


class _ZstdRaw(io.RawIOBase):
    """zstd frames (one or more) as a raw stream; a stream that ends inside a frame raises EOFError.

    ``zstandard``'s own ``stream_reader`` returns a silent EOF on a truncated frame, so the frames
    are driven here with decompression objects, which report whether a frame ended.
    """

    def __init__(self, raw: BinaryIO):
        import zstandard

        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._obj, self._in_frame, self._buf = self._dctx.decompressobj(), False, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("Compressed file ended before the end of a zstd frame")
                return 0
            while chunk:
                self._in_frame = True
                self._buf += self._obj.decompress(chunk)
                chunk = b""
                if self._obj.eof:  # frame finished: the rest of the chunk starts the next frame
                    chunk, self._in_frame = self._obj.unused_data, False
                    self._obj = self._dctx.decompressobj()
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


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
    if codec == ".gz":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif codec == ".xz":
        stream = lzma.LZMAFile(raw)
    elif codec == ".bz2":
        stream = bz2.BZ2File(raw)
    else:
        stream = io.BufferedReader(_ZstdRaw(raw), _CHUNK)
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
