"""A streaming safetensors writer: headers first, then tensor bytes at their final offsets, in any order.

The converter receives each tensor as pieces from many rank files (ZeRO partitions), so it
cannot write tensors one after another. Instead every output file's header is written up
front (names, shapes, offsets are known from the checkpoint's ``param_shapes``), the file is
sized with ``ftruncate``, and each piece is ``pwrite``-n to its place: nothing is buffered.
Above ``shard_size`` bytes the weights are split into ``model-0000k-of-0000n.safetensors``
plus ``model.safetensors.index.json``, as Hugging Face's ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from megameta.errors import InputError, MegaMetaError

_ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def parse_size(text: str | int) -> int:
    """'2GB' -> 2e9 bytes, '500MiB' -> 500 * 2**20 (Hugging Face's convention); ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise InputError(f"--shard-size: expected a size like 2GB or 500MiB, got {text!r}")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    scale |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    return int(float(m.group(1)) * scale[unit])


class SafetensorsWriter:
    """Safetensors file(s) whose headers are written first; tensor bytes then land at their final offsets
    in any order (``write(name, element_offset, piece)``), so nothing is buffered in memory."""

    def __init__(self, out_dir: Path, names: dict[str, torch.Size], dtype: torch.dtype, shard_size: int):
        self.dtype, self.esize = dtype, torch.empty((), dtype=dtype).element_size()
        shards: list[list[str]] = [[]]
        size = 0
        for name, shape in names.items():
            nbytes = math.prod(shape) * self.esize
            if shards[-1] and size + nbytes > shard_size:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
        n = len(shards)
        files = (
            ["model.safetensors"]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self.where: dict[str, tuple[int, int]] = {}  # name -> (fd, byte offset of its data)
        self.fds, self.total = [], 0
        self.written = dict.fromkeys(names, 0)
        self.numel = {k: math.prod(v) for k, v in names.items()}
        for fname, members in zip(files, shards):
            header: dict = {"__metadata__": {"format": "pt"}}
            pos = 0
            for name in members:
                nbytes = self.numel[name] * self.esize
                header[name] = {
                    "dtype": _ST_DTYPE[dtype],
                    "shape": list(names[name]),
                    "data_offsets": [pos, pos + nbytes],
                }
                pos += nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            fd = os.open(out_dir / fname, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
            os.ftruncate(fd, 8 + len(raw) + pos)
            base = 8 + len(raw)
            for name in members:
                self.where[name] = (fd, base + header[name]["data_offsets"][0])
            self.fds.append(fd)
            self.total += pos
        if n > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": {k: files[i] for i, m in enumerate(shards) for k in m},
            }
            (out_dir / "model.safetensors.index.json").write_text(
                json.dumps(index, indent=2, sort_keys=True) + "\n"
            )
        self.files = files

    def write(self, name: str, start: int, piece: torch.Tensor) -> None:
        fd, base = self.where[name]
        data = piece.detach().to(self.dtype).contiguous()
        raw = data.view(torch.int16) if self.esize == 2 else data  # numpy has no bfloat16
        buf = memoryview(raw.numpy()).cast("B")
        off, done = base + start * self.esize, 0
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], off + done)
        self.written[name] += piece.numel()

    def close(self, check: bool = True) -> None:
        for fd in self.fds:  # no fsync: the dir only gets its final name once complete
            os.close(fd)
        self.fds = []
        if not check:
            return
        short = [k for k, n in self.written.items() if n != self.numel[k]]
        if short:
            raise MegaMetaError(
                f"incomplete weights written for {short[:3]} (checkpoint layout not understood)"
            )
