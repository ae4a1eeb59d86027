"""Shared test helpers: tiny run configs on the synthetic corpus (`corpus_fixture`), CLI runners."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from corpus_fixture import make_corpus  # noqa: F401  (the suite's one synthetic corpus, used with tiny_config)

from megameta.checkpoint import load_weights, state_dict_digest
from megameta.train.dist import free_port

REPO = Path(__file__).resolve().parents[1]


def tiny_config(run_dir: Path, corpus_dir: Path, **sections) -> dict:
    """A run config dict for a seconds-long two-phase run on :func:`make_corpus` data."""
    cfg = {
        "run_dir": str(run_dir),
        "corpus": {"dir": str(corpus_dir), "demo": False},
        "tokenizer": {"vocab_size": 250, "max_sentences": 3000},
        "data": {
            "sources": {
                "en": ["wiki/en/train.jsonl", "udhr/train/eng.jsonl"],
                "fr": ["wiki/fr/train.jsonl", "udhr/train/fra.jsonl"],
                "es": ["wiki/es/train.jsonl"],
                "ru": ["udhr/train/rus.jsonl"],
            },
            "valid_sources": {
                **{lang: [f"wiki/{lang}/valid.jsonl"] for lang in ("en", "fr", "es")},
                "ru": ["udhr/heldout/rus.jsonl"],
            },  # fmt: skip
            "workers": 1,
            "max_seq_len": 32,
        },
        "model": {
            "preset": "custom",
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 40,
        },
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"micro_batch_size": 4, "log_every": 2, "save_every": 2, "eval_batches": 1, "seed": 7},
        "phases": [
            {"name": "meta", "langs": ["en"], "steps": 4},
            {"name": "xlingual", "langs": ["en", "fr", "es", "ru"], "steps": 4, "init_from": "meta"},
        ],
        "baseline": [{"name": "baseline", "langs": ["en", "fr", "es", "ru"], "steps": 8}],
        "evaluate": {
            "mlm_files": {
                "en": ["wiki/en/test.jsonl"],
                "fr": ["wiki/fr/test.jsonl"],
                "ru": ["udhr/heldout/rus.jsonl"],
            },
            "mlm_max_docs": 20,
            "max_seq_len": 32,
            "retrieval_langs": ["eng", "fra", "rus"],
            "classify_seeds": [1],
            "classify_max_train": 60,
            "classify_max_test": 30,
        },
        "launch": {"launcher": "deepspeed", "nproc": 2},
    }
    for key, value in sections.items():
        cfg[key] = (
            {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
        )
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The checkout first; an existing PYTHONPATH stays after it (the GPU machine's carried wheels).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path})
    env.update(extra)
    return env


def megameta(
    *args: str, timeout: int = 600, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (what users run); returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "megameta.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        cwd=cwd or REPO,
    )


# ---- launching training runs (engine and reliability tests) ----


NO_DROPOUT = ("model.hidden_dropout=0", "model.attention_dropout=0")


def make_run(prepared, tmp_path: Path, name: str = "run", **train) -> tuple[Path, Path]:
    run = tmp_path / name
    run.mkdir()
    for part in ("tokenizer", "shards"):
        (run / part).symlink_to(prepared["run"] / part)
    cfg = tiny_config(run, prepared["corpus"])
    cfg["train"].update({"log_every": 1, "save_every": 2, "keep_last": 3, **train})
    cfg["phases"][0]["steps"] = 6
    return run, write_config(tmp_path / f"{name}.yaml", cfg)


def train_cmd(config: Path, nproc: int, *overrides: str, launcher: str = "torchrun") -> list[str]:
    args = ["train", "--config", str(config), "--phase", "meta", *overrides]
    if launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(free_port()),
            "-m",
            "megameta.cli",
            *args,
        ]
    if launcher == "deepspeed":
        return [
            str(Path(sys.executable).parent / "deepspeed"),
            "--num_gpus",
            str(nproc),
            "--master_port",
            str(free_port()),
            "--module",
            "megameta.cli",
            *args,
        ]
    if launcher == "mpirun":
        return [str(Path(sys.executable).parent / "mpirun"), "-np", str(nproc), "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo",
                "-x", f"MASTER_PORT={free_port()}", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS", sys.executable, "-m", "megameta.cli", *args]  # fmt: skip
    return [sys.executable, "-m", "megameta.cli", *args]


def train(
    config: Path,
    nproc: int = 2,
    *overrides: str,
    launcher: str = "torchrun",
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run training to its end; ``env`` adds environment variables (e.g. ``MEGAMETA_FAULT``)."""
    proc = subprocess.run(
        train_cmd(config, nproc, *overrides, launcher=launcher),
        capture_output=True,
        text=True,
        env=cli_env(**(env or {})),
        cwd=REPO,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "meta" / "train_log.jsonl").read_text().splitlines()]


def final_digest(run: Path) -> str:
    return state_dict_digest(load_weights(run / "meta")[0])


def rank_pids(root: int) -> list[int]:
    """Descendants of ``root`` that run `megameta.cli train` (the ranks, not the launcher)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for child in map(int, children):
            todo.append(child)
            cmdline = (
                Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                if Path(f"/proc/{child}/cmdline").exists()
                else b""
            )
            if b"megameta.cli" in cmdline and b"deepspeed.launcher" not in cmdline:
                out.append(child)
    return out


def start_train(
    config: Path, nproc: int, *overrides: str, launcher: str = "torchrun", output: bool = False
) -> subprocess.Popen:
    """A training job in the background, in its own process group (a test can signal it all at once)."""
    return subprocess.Popen(
        train_cmd(config, nproc, *overrides, launcher=launcher),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, run: Path, step: int, sig: int, group: bool) -> list[int]:
    """Send ``sig`` once the train log reaches ``step``: to the launcher's process group (``group``: the
    launcher itself and what shares its group) or to the rank processes only. Returns the ranks' pids."""
    log = run / "meta" / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(
            json.loads(line)["step"] >= step for line in log.read_text().splitlines() if line.strip()
        ):
            ranks = rank_pids(proc.pid)
            if group:
                os.killpg(proc.pid, sig)
            else:  # the rank processes only, as SLURM's `srun --signal` / `scancel --signal` deliver it
                for pid in ranks:
                    os.kill(pid, sig)
            return ranks
        time.sleep(0.05)
    raise AssertionError(f"run never reached step {step}")


def assert_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Every process in ``pids`` has exited within ``timeout`` seconds (zombies count as exited)."""

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + timeout
    while time.time() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # leave nothing running into the next test
    assert not left, f"ranks {left} outlived their killed launcher"


def shm_segments() -> set[str]:
    """DeepSpeed's CPU all-reduce segments in /dev/shm (a run must leave none behind, even when killed)."""
    return {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


# ---- synthetic checkpoints (fast unit tier: no training run) ----


def synthetic_checkpoint(root: Path, step: int, files: dict[str, bytes] | None = None, **meta) -> Path:
    """Checkpoint ``step`` under checkpoints dir ``root``, written through staging + ``finalize`` like the
    trainer's; ``files`` (relative name -> bytes) stand in for DeepSpeed's, ``meta`` overrides fields."""
    from megameta.checkpoint import CheckpointMeta, finalize, staging_dir, tag_for

    tag = tag_for(step)
    stage = staging_dir(root, tag) / tag
    stage.mkdir(parents=True)
    for name, data in (files or {"mp_rank_00_model_states.pt": f"weights {step}".encode()}).items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(data)
    fields = dict(step=step, samples_seen=8 * step, tokens_seen=256 * step, phase="meta", world_size=2,
                  model={"preset": "custom", "vocab_size": 100}, zero_stage=2, precision="fp32",
                  langs=["en"], lang_samples=[8 * step], lang_tokens=[256 * step])  # fmt: skip
    return finalize(root, tag, CheckpointMeta(**{**fields, **meta}))


def save_hf_model(path: Path, cfg, seed: int) -> dict:
    """Our model initialized under ``seed``, saved as a Hugging Face model dir at ``path`` (what a
    phase hand-off reads); returns its state dict."""
    import torch
    from transformers import XLMRobertaForMaskedLM

    from megameta.model import XLMRForMaskedLM, to_hf_config

    torch.manual_seed(seed)
    ours = XLMRForMaskedLM(cfg)
    hf = XLMRobertaForMaskedLM(to_hf_config(ours.cfg))
    hf.load_state_dict(ours.state_dict())
    hf.save_pretrained(path)
    return ours.state_dict()
