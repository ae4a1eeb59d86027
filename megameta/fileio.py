"""Small file helpers shared by the data, checkpoint and corpus code: checksums and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from megameta.errors import InputError


def require_file(path: str | Path) -> Path:
    """``path`` as a Path; `InputError` naming it when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    return path


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-empty line of a JSON-lines file; `InputError` naming the file
    when it is missing and ``path:line`` for a line that is not a JSON object."""
    path = Path(path)
    with open(require_file(path), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: expected a JSON object")
            yield n, row


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed in ``block``-byte reads."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary name, fsync, then rename over ``path``: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def truncate_jsonl_after(path: str | Path, step: int) -> None:
    """Drop the rows of a JSON-lines log whose ``step`` is past ``step`` (replayed after a resume)."""
    import json

    path = Path(path)
    if not path.exists():
        return
    rows = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(row + "\n" for row in rows))
