"""Rank-0 observability: TensorBoard scalars, a one-line console log, a progress bar on a TTY."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def peak_tflops(device: torch.device, precision: str = "bf16") -> float | None:
    """Dense peak TFLOP/s of ``device`` for MFU (``megameta.hardware``; MEGAMETA_PEAK_TFLOPS overrides)."""
    from megameta.hardware import PEAK_ENV, peak_tflops_for

    if PEAK_ENV in os.environ:
        return float(os.environ[PEAK_ENV])
    if device.type != "cuda":
        return None
    return peak_tflops_for(torch.cuda.get_device_name(device), precision)


class MetricLogger:
    """Writes scalars on rank 0 only; every method is a no-op elsewhere."""

    def __init__(self, phase_dir: Path, is_main: bool, tensorboard: bool, total_steps: int):
        self.is_main = is_main
        self.log_path = phase_dir / "train_log.jsonl"
        self.total_steps = total_steps
        self.start = time.time()
        self.writer = None
        self.tb_dir = phase_dir / "tensorboard" if is_main and tensorboard else None
        self.purge_step: int | None = None
        self.bar = None
        if is_main and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None and self.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events an interrupted run wrote after the checkpoint we resumed from.
            self.writer = SummaryWriter(str(self.tb_dir), purge_step=self.purge_step)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def system_scalars(
        self, device: torch.device, tokens_per_s: float, model_cfg, seq_len: int, world: int
    ) -> dict[str, float]:
        out = {}
        if device.type == "cuda":
            out["system/memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        else:
            import psutil

            out["system/memory_gb"] = psutil.Process().memory_info().rss / 2**30
        from megameta.model.encoder import flops_per_token

        tflops = flops_per_token(model_cfg, seq_len) * tokens_per_s / 1e12
        out["system/model_tflops"] = tflops
        peak = peak_tflops(device)
        if peak:
            out["system/mfu"] = tflops / (peak * world)
        return out

    def console(
        self, step: int, tokens: int, loss: float, lr: float, tok_s: float, lang_losses: dict[str, float]
    ) -> None:
        if not self.is_main:
            return
        elapsed = time.time() - self.start
        eta = elapsed / max(step, 1) * (self.total_steps - step)
        langs = " ".join(f"{k}={v:.2f}" for k, v in lang_losses.items()) if len(lang_losses) > 1 else ""
        line = (
            f"step {step}/{self.total_steps} | tokens {_fmt_count(tokens)} | loss {loss:.4f} | lr {lr:.2e} | "
            f"{_fmt_count(tok_s)} tok/s | eta {_fmt_time(eta)}" + (f" | {langs}" if langs else "")
        )
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"loss {loss:.3f}")
            self.bar.write(line)
        else:
            print(line, flush=True)

    def record(self, row: dict) -> None:
        """Append one JSON line to ``train_log.jsonl`` (the exact loss trajectory, for tests and tools)."""
        if self.is_main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop log rows newer than ``step`` (written by a run that died before its next checkpoint)."""
        self.purge_step = step + 1
        if not self.is_main or not self.log_path.exists():
            return
        rows = [
            line
            for line in self.log_path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step
        ]
        self.log_path.write_text("".join(row + "\n" for row in rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
