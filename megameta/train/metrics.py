"""Rank-0 observability: TensorBoard scalars, a one-line console log, a progress bar on a TTY."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from megameta.fileio import truncate_jsonl_after
from megameta.layout import PhaseLayout
from megameta.train.dist import all_reduce_host
from megameta.train.prefetch import model_inputs


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


class StepWindow:
    """This rank's per-language MLM loss sums and token count over the steps of one log window.

    The sums stay on ``device`` (adding to them is asynchronous device work); they come to the host
    only when a log window closes, so a training step never waits for the device because of them.
    """

    def __init__(self, n_langs: int, device: torch.device | str = "cpu"):
        self.loss_sum = torch.zeros(n_langs, dtype=torch.float64, device=device)
        self.loss_cnt = torch.zeros(n_langs, dtype=torch.float64, device=device)
        self.tokens = self.steps = 0

    def add(self, langs: torch.Tensor, token_losses: torch.Tensor, tokens: int) -> None:
        """One micro-batch: ``langs`` and ``token_losses`` per masked token (on the window's device),
        ``tokens`` non-padding tokens (a host count)."""
        self.loss_sum.index_add_(0, langs, token_losses.detach().double())
        self.loss_cnt.index_add_(0, langs, torch.ones_like(langs, dtype=torch.float64))
        self.tokens += tokens

    def merge(self, other: StepWindow) -> None:
        self.loss_sum += other.loss_sum
        self.loss_cnt += other.loss_cnt
        self.tokens += other.tokens
        self.steps += 1

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.loss_cnt.zero_()
        self.tokens = self.steps = 0


class MetricLogger:
    """Writes scalars on rank 0 only; every method is a no-op elsewhere."""

    def __init__(self, layout: PhaseLayout, is_main: bool, tensorboard: bool, total_steps: int):
        self.is_main = is_main
        self.log_path = layout.train_log
        self.total_steps = total_steps
        self.start = time.time()
        self.writer = None
        self.tb_dir = layout.tensorboard if is_main and tensorboard else None
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

    def describe_system(
        self, device: torch.device, model_cfg, seq_len: int, world: int, mask_prob: float = 0.15
    ) -> None:
        """What throughput is measured against: the device, the model's FLOPs per token (the masked-only
        head runs on the ``mask_prob`` fraction of the tokens), the world size."""
        self.system = (device, model_cfg, seq_len, world, mask_prob)

    def system_scalars(self, tokens_per_s: float) -> dict[str, float]:
        """``system/memory_gb``, ``system/model_tflops`` (all ranks) and, when the device's peak is known,
        ``system/mfu`` (model FLOP/s over the world's peak)."""
        device, model_cfg, seq_len, world, mask_prob = self.system
        out = {}
        if device.type == "cuda":
            out["system/memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        else:
            import psutil

            out["system/memory_gb"] = psutil.Process().memory_info().rss / 2**30
        from megameta.model.encoder import flops_per_token

        tflops = flops_per_token(model_cfg, seq_len, mask_prob) * tokens_per_s / 1e12
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

    def start_window(self) -> None:
        self.window_start = time.time()

    def log_window(
        self,
        step: int,
        langs: list[str],
        sums: torch.Tensor,
        tokens: int,
        samples: int,
        scalars: dict,
        row: dict,
    ) -> None:
        """Close a log window: ``sums`` is [2, langs] (loss sums, counts) over all ranks, ``tokens`` and
        ``samples`` the window's totals over all ranks; ``scalars`` and ``row`` carry the trainer's own values
        (lr, data shares, grad norm; step, samples and tokens seen) for TensorBoard and the train log."""
        now = time.time()
        dt = max(now - self.window_start, 1e-9)
        self.window_start = now
        lang_losses = {
            lang: (sums[0, i] / sums[1, i]).item() for i, lang in enumerate(langs) if sums[1, i] > 0
        }
        loss = (sums[0].sum() / sums[1].sum().clamp(min=1)).item()
        scalars = {
            "train/loss": loss,
            "train/tokens_per_s": tokens / dt,
            "train/samples_per_s": samples / dt,
            **scalars,
        }
        scalars.update({f"train/loss_{k}": v for k, v in lang_losses.items()})
        scalars.update(self.system_scalars(tokens / dt))
        self.scalars(scalars, step)
        self.console(step, row["tokens_seen"], loss, scalars["train/lr"], tokens / dt, lang_losses)
        self.record({**row, "loss": loss, "lr": scalars["train/lr"], "lang_loss": lang_losses})

    def record(self, row: dict) -> None:
        """Append one JSON line to ``train_log.jsonl`` (the exact loss trajectory, for tests and tools)."""
        if self.is_main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop log rows newer than ``step`` (written by a run that died before its next checkpoint)."""
        self.purge_step = step + 1
        if self.is_main:
            truncate_jsonl_after(self.log_path, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.bar is not None:
            self.bar.close()


def append_sample_log(path: Path, step: int, indices: np.ndarray, sampler) -> None:
    """Audit log (``train.log_samples``): one JSON line per sample this rank trains on in ``step``."""
    lang, chunk, epoch = sampler.lookup(indices)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in zip(indices.tolist(), lang.tolist(), chunk.tolist(), epoch.tolist(), strict=True):
            fields = dict(zip(("sample", "lang", "chunk", "epoch"), row, strict=True))
            f.write(json.dumps({"step": step, **fields}) + "\n")


def data_shares(sampler, samples_seen: int, langs: list[str]) -> dict[str, float]:
    """``data/share_<lang>``: each language's share of the global samples [0, samples_seen)."""
    samples = sampler.samples_per_language(samples_seen)
    shares = samples / max(1, samples.sum())
    return {f"data/share_{lang}": float(shares[i]) for i, lang in enumerate(langs)}


def engine_scalars(engine, precision: str) -> dict[str, float]:
    """The DeepSpeed engine's own health numbers: global gradient norm, and the fp16 loss scale."""
    out = {}
    if (grad_norm := engine.get_global_grad_norm()) is not None:
        out["train/grad_norm"] = float(grad_norm)
    scale = getattr(engine.optimizer, "cur_scale", None) or getattr(engine.optimizer, "loss_scale", None)
    if isinstance(scale, (int, float)) and precision == "fp16":
        out["train/loss_scale"] = float(scale)
    return out


@torch.no_grad()
def valid_loss(engine, valid, train, rank: int, world: int, device: torch.device) -> dict[str, float]:
    """Mean masked-token loss per language of ``valid`` (an MLMStream of held-out or training text, or
    None: no languages): ``train.eval_batches`` micro-batches of ``train.micro_batch_size`` fixed chunks
    per language, rank ``r`` of ``world`` taking every world-th one. The sums stay on ``device`` until the one
    all-reduce at the end; ``engine`` is left in training mode."""
    if valid is None:
        return {}
    engine.eval()
    mb, langs = train.micro_batch_size, valid.langs
    sums = torch.zeros(len(langs), 2, dtype=torch.float64, device=device)
    for lang_id in range(len(langs)):
        for b in range(train.eval_batches):
            batch = valid.fixed_batch(lang_id, np.arange(mb) + (b * world + rank) * mb)
            out = engine(**model_inputs(batch, device))
            sums[lang_id, 0] += out.token_losses.double().sum()
            sums[lang_id, 1] += len(out.token_losses)
    sums = all_reduce_host(device, sums)
    engine.train()
    return {lang: (sums[i, 0] / sums[i, 1].clamp(min=1)).item() for i, lang in enumerate(langs)}
