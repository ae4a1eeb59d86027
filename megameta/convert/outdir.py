"""What both directions of conversion write the same way: a staged output dir, tokenizer files, provenance."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: written into every output dir: where it came from (source, step, tokens, digests).
PROVENANCE = "megameta_provenance.json"
_TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "megameta_tokenizer.json")  # fmt: skip


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh dir beside ``out_dir`` to write into; it replaces ``out_dir`` when the block succeeds
    and is removed when it fails, so ``out_dir`` is never seen half-written."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield work
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def has_tokenizer(path: Path) -> bool:
    return (path / "sentencepiece.bpe.model").exists() or (path / "tokenizer.json").exists()


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy tokenizer files as they are (lossless; no transformers import needed)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
