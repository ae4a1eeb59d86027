"""Tokenizer training on 1 GB of compressed text: streamed sampling, peak memory set by the sample size."""

from __future__ import annotations

import gzip
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
import zstandard
from helpers import REPO, cli_env
from test_preprocess_load import SYLLABLES, _bodies, _tree_pss

from megameta.data.tokenizer import MAX_SENTENCE_BYTES, memory_bound_mb

pytestmark = pytest.mark.slow

TOTAL_BYTES = 10**9
SHARES = {"en": 0.55, "fr": 0.25, "es": 0.15, "ru": 0.05}
MAX_SENTENCES = 20_000


def generate(root: Path) -> dict[str, list[str]]:
    """~1 GB of text over 4 languages, written compressed (.txt.zst for en/es, .txt.gz for fr/ru)."""
    root.mkdir(parents=True)
    sources = {}
    for lang, share in SHARES.items():
        assert lang in SYLLABLES
        bodies = _bodies(lang, 2000)
        rng = random.Random(f"order:{lang}")
        path = root / f"{lang}.txt{'.zst' if lang in ('en', 'es') else '.gz'}"
        with open(path, "wb") as raw:
            f = (
                zstandard.ZstdCompressor(level=1).stream_writer(raw)
                if path.suffix == ".zst"
                else gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)
            )
            written, i = 0, 0
            while written < share * TOTAL_BYTES:
                block = "".join(f"{lang} {i + k}: {rng.choice(bodies)}\n" for k in range(2000)).encode()
                written += f.write(block)
                i += 2000
            f.close()
        sources[lang] = [str(path)]
    return sources


@pytest.fixture
def scratch(tmp_path):
    """``tmp_path``, removed afterwards (about 300 MB of compressed text)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_tokenizer_on_1gb_of_compressed_text_stays_within_its_memory_bound(scratch):
    t = time.time()
    sources = generate(scratch / "text")
    print(f"generated in {time.time() - t:.0f}s")
    compressed = sum(Path(f).stat().st_size for files in sources.values() for f in files)
    script = (
        "import json, sys\n"
        "from megameta.data.tokenizer import train_tokenizer\n"
        "s = train_tokenizer(json.loads(sys.argv[1]), sys.argv[2], vocab_size=1000, "
        f"max_sentences={MAX_SENTENCES}, num_threads=1)\n"
        "print(json.dumps(s))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(sources), str(scratch / "tok")],
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
    out, err = proc.communicate(timeout=600)
    watcher.join()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    sentences, sample_bytes = summary["sentences"], summary["sample_bytes"]
    bound = memory_bound_mb(sample_bytes)
    print(
        f"1 GB text ({compressed / 1e6:.0f} MB compressed), sample {sample_bytes / 1e6:.0f} MB: "
        f"peak PSS {peak / 2**20:.0f} MiB, bound {bound} MiB"
    )
    assert compressed < TOTAL_BYTES / 2  # the text really was compressed, and read as a stream
    assert peak < bound * 2**20
    assert sample_bytes <= 2 * MAX_SENTENCES * MAX_SENTENCE_BYTES and bound * 2**20 < TOTAL_BYTES
    # every language is in the sample, small ones upweighted (alpha 0.3): ru has 5% of the text
    assert set(sentences) == set(SHARES) and sum(sentences.values()) == pytest.approx(MAX_SENTENCES, rel=0.05)
    assert sentences["ru"] / sum(sentences.values()) > 2 * SHARES["ru"]
    assert (scratch / "tok" / "sentencepiece.bpe.model").exists()
