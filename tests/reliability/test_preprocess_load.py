"""Preprocessing under load: 1 GB of generated text, 1 worker vs 2, identical bytes, bounded memory."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import REPO, cli_env, tiny_config, write_config

from megameta.data.preprocess import memory_bound_mb

pytestmark = pytest.mark.slow

TOTAL_BYTES = 10**9
SHARES = {"en": 0.4, "fr": 0.3, "es": 0.2, "ru": 0.1}
SYLLABLES = {
    "en": "ba ce di fo gu ha je ki lo mu na pe qi ro su ta ve wi xo yu ze th sh ng".split(),
    "fr": "bé cè da fê gi ho jo ku là mé né pô qu ré sa tè vu ou eau oi ch gn".split(),
    "es": "bá ce dí fo gu há je ki ló mu ña pe qui rró su ta ve lla ch ño ue".split(),
    "ru": "ба ве ги до же зи ка ло ме ну по ри сы ту фе хо цы че ша щу ю я".split(),
}


def _bodies(lang: str, n: int) -> list[str]:
    """``n`` distinct document bodies of 20-400 words from a 400-word generated lexicon."""
    rng = random.Random(f"load:{lang}")
    lex = ["".join(rng.choice(SYLLABLES[lang]) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    return [" ".join(rng.choices(lex, k=rng.randint(20, 400))).capitalize() + "." for _ in range(n)]


def generate(root: Path) -> dict[str, list[str]]:
    """~1 GB over 4 languages (.txt and .jsonl): every line unique (a running number), bodies reused."""
    root.mkdir(parents=True)
    sources = {}
    for lang, share in SHARES.items():
        bodies = _bodies(lang, 2000)
        rng = random.Random(f"order:{lang}")
        path = root / (f"{lang}.jsonl" if lang == "fr" else f"{lang}.txt")
        with open(path, "wb") as f:
            written, i = 0, 0
            while written < share * TOTAL_BYTES:
                text = f"{lang} {i}: {rng.choice(bodies)}"
                line = (json.dumps({"text": text}, ensure_ascii=False) if lang == "fr" else text) + "\n"
                written += f.write(line.encode())
                i += 1
        sources[lang] = [str(path)]
    return sources


def _tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss  # proportional: forked workers' shared pages counted once
        except psutil.Error:
            pass
    return total


def preprocess_watched(config: Path, workers: int) -> tuple[subprocess.CompletedProcess, int]:
    """``megameta preprocess`` in a fresh interpreter; returns (result, peak PSS of its process tree)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "megameta.cli",
            "preprocess",
            "--config",
            str(config),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )
    peak = 0

    def watch():
        nonlocal peak
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, _tree_pss(ps))
            except psutil.Error:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=900)
    watcher.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak


def _digests(shards: Path) -> dict[str, str]:
    out = {}
    for p in sorted(shards.rglob("*")):
        if p.suffix in (".bin", ".idx"):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
            out[str(p.relative_to(shards))] = h.hexdigest()
    return out


@pytest.fixture
def scratch(tmp_path):
    """``tmp_path``, removed afterwards: about 3 GB that pytest would otherwise keep for 3 sessions."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_1gb_with_2_workers_is_identical_to_1_worker_within_the_memory_bound(scratch, prepared):
    from megameta.data.tokenizer import train_tokenizer

    tmp_path = scratch

    sources = generate(tmp_path / "text")
    size = sum(Path(f).stat().st_size for files in sources.values() for f in files)
    assert size >= TOTAL_BYTES
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(b for lang in SHARES for b in _bodies(lang, 300)) + "\n")
    train_tokenizer({"all": [str(sample)]}, tmp_path / "tokenizer", vocab_size=1000, max_sentences=1200)

    results = {}
    for workers in (1, 2):
        run = tmp_path / f"w{workers}"
        shutil.copytree(tmp_path / "tokenizer", run / "tokenizer")
        cfg = tiny_config(run, prepared["corpus"])
        cfg["data"]["sources"] = sources
        cfg["data"]["valid_sources"] = {}
        cfg["phases"] = [{"name": "meta", "langs": ["en"], "steps": 1}]
        cfg["baseline"] = []
        proc, peak = preprocess_watched(write_config(tmp_path / f"w{workers}.yaml", cfg), workers)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = json.loads((run / "shards" / "manifest.json").read_text())
        results[workers] = (_digests(run / "shards"), manifest, peak)
        print(f"{workers} worker(s): peak PSS {peak / 2**20:.0f} MiB, bound {memory_bound_mb(workers)} MiB")
        assert peak < memory_bound_mb(workers) * 2**20

    (d1, m1, _), (d2, m2, _) = results[1], results[2]
    assert len(d1) == 2 * len(SHARES) and d1 == d2
    for lang in SHARES:
        e1, e2 = m1["languages"][lang]["train"], m2["languages"][lang]["train"]
        assert e1["bytes"] == e2["bytes"] and e1["docs"] == e2["docs"] > 0 and e1["tokens"] == e2["tokens"]
    assert sum(m1["languages"][lang]["train"]["bytes"] for lang in SHARES) >= TOTAL_BYTES
