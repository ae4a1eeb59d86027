"""One training phase under DeepSpeed.

The trainer's state is one object: model, optimizer, scheduler and loss scaler
live in the DeepSpeed engine; step, samples and tokens seen live in
:meth:`Trainer.state_dict`; RNG states are saved per rank. Resume is automatic
when the phase dir holds a checkpoint, and is not a special path: a fresh run
is a resume from step 0.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megameta import checkpoint as ckpt
from megameta.checkpoint import CheckpointMeta
from megameta.config import PhaseConfig, RunConfig, dump_config
from megameta.data.loader import MLMStream
from megameta.data.tokenizer import Vocab
from megameta.errors import EXIT_OK, EXIT_REQUEUE, InputError, MegaMetaError
from megameta.fileio import write_atomic
from megameta.train.dist import init_distributed
from megameta.train.ds_config import render_ds_config, uses_offload
from megameta.train.faults import FaultInjector
from megameta.train.metrics import MetricLogger
from megameta.train.schedule import lr_lambda

DONE = "DONE.json"

# DeepSpeed's ZeRO-1/2 call this deprecated torch API once per rank; the warning is not the user's to act on.
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated", category=FutureWarning
)


def phase_budget_steps(cfg: RunConfig, phase: PhaseConfig, global_batch: int) -> int:
    if phase.steps:
        return phase.steps
    return max(1, math.ceil(phase.tokens / (global_batch * cfg.data.max_seq_len)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (1-D parameters)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class Trainer:
    """Trains ``phase`` of ``cfg``; ``run()`` returns the process exit code."""

    def __init__(self, cfg: RunConfig, phase: PhaseConfig):
        self.cfg, self.phase = cfg, phase
        self.phase_dir = cfg.phase_dir(phase.name)
        self.ckpt_root = self.phase_dir / "checkpoints"
        self.step = 0
        self.samples_seen = 0
        self.tokens_seen = 0
        self._signal: int | None = None

    # ---------------------------------------------------------------- set-up
    def setup(self) -> None:
        cfg, phase, train = self.cfg, self.phase, self.cfg.train
        self.rank, self.local_rank, self.world = init_distributed(train.dist_timeout_s)
        self.is_main = self.rank == 0
        self.fault = FaultInjector(self.rank)
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        acc = get_accelerator()
        self.device = (
            torch.device(acc.device_name(self.local_rank))
            if acc.device_name() != "cpu"
            else torch.device("cpu")
        )
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.ds_config = render_ds_config(
            train, self.world, cfg.optim.grad_clip, acc.is_fp16_supported(), acc.is_bf16_supported()
        )
        self.global_batch = self.ds_config["train_batch_size"]
        self.total_steps = phase_budget_steps(cfg, phase, self.global_batch)
        self.log = MetricLogger(self.phase_dir, self.is_main, train.tensorboard, self.total_steps)

        tok_dir = cfg.tokenizer_dir
        self.tokenizer = Vocab(tok_dir)  # the ids, without importing transformers
        alpha0 = phase.alpha if phase.alpha is not None else cfg.data.alpha
        alpha1 = phase.alpha_end if phase.alpha_end is not None else alpha0
        total_samples = self.total_steps * self.global_batch

        def alpha_at(sample: int) -> float:
            return alpha0 + (alpha1 - alpha0) * min(1.0, sample / max(1, total_samples))

        self.alpha_at = alpha_at
        common = dict(
            tokenizer_dir=tok_dir,
            tokenizer=self.tokenizer,
            seq_len=cfg.data.max_seq_len,
            mask_prob=cfg.data.mask_prob,
        )
        self.stream = MLMStream(
            cfg.shard_dir,
            phase.langs,
            seed=cfg.data.seed,
            alpha_at=alpha_at,
            whole_word_mask=cfg.data.whole_word_mask,
            **common,
        )
        valid_langs = [lang for lang in phase.langs if lang in cfg.data.valid_sources]
        self.valid = (
            MLMStream(
                cfg.shard_dir, valid_langs, seed=cfg.data.seed + 1, alpha_at=alpha_at, split="valid", **common
            )
            if valid_langs
            else None
        )

        seed_everything(train.seed)
        self.model_cfg = self._model_config()
        from megameta.model import XLMRForMaskedLM

        model = XLMRForMaskedLM(self.model_cfg)
        self.init_source = None
        if phase.init_from:
            self.init_source = self._load_init_weights(model, phase.init_from)

        self._find_resume()
        from deepspeed.checkpoint import constants as ds_ckpt

        # Lets ds_to_universal re-shard our checkpoints when a run resumes on another world size.
        setattr(
            model,
            ds_ckpt.UNIVERSAL_CHECKPOINT_INFO,
            {ds_ckpt.UNIVERSAL_CHECKPOINT_VERSION_KEY: ds_ckpt.UNIVERSAL_CHECKPOINT_VERSION_VALUE},
        )
        groups = param_groups(model, cfg.optim.weight_decay)
        lr = phase.lr or cfg.optim.lr
        warmup = phase.warmup_steps if phase.warmup_steps is not None else cfg.optim.warmup_steps
        schedule = lr_lambda(cfg.optim.schedule, warmup, self.total_steps, cfg.optim.min_lr_ratio)
        optimizer = None
        if uses_offload(self.ds_config):
            # ZeRO-Offload needs DeepSpeed's own (CPU) Adam, built from the config.
            self.ds_config["optimizer"] = {
                "type": "AdamW",
                "params": {
                    "lr": lr,
                    "betas": list(cfg.optim.betas),
                    "eps": cfg.optim.eps,
                    "weight_decay": cfg.optim.weight_decay,
                },
            }
        else:
            from megameta.kernels import build_adamw

            optimizer = build_adamw(
                groups,
                lr=lr,
                betas=tuple(cfg.optim.betas),
                eps=cfg.optim.eps,
                weight_decay=cfg.optim.weight_decay,
                device=self.device,
            )
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=groups if optimizer is None else None,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
            config=self.ds_config,
        )
        if self.is_main:
            self._write_run_files()
        self._resume()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _model_config(self):
        mc = self.cfg.model.resolved()
        if mc.vocab_size == 0:
            mc.vocab_size = len(self.tokenizer)
        elif mc.vocab_size != len(self.tokenizer):
            raise InputError(
                f"model.vocab_size is {mc.vocab_size} but the tokenizer at {self.cfg.tokenizer_dir} has {len(self.tokenizer)} ids"
            )
        need = self.cfg.data.max_seq_len + mc.pad_token_id + 1
        if need > mc.max_position_embeddings:
            raise InputError(
                f"data.max_seq_len {self.cfg.data.max_seq_len} needs model.max_position_embeddings >= {need}"
            )
        mc.validate("model")
        return mc

    def _load_init_weights(self, model: torch.nn.Module, ref: str) -> dict:
        """Phase hand-off: weights only (optimizer and schedule start fresh)."""
        from megameta.checkpoint import load_weights, state_dict_digest

        source = (
            self.cfg.phase_dir(ref)
            if ref in {p.name for p in self.cfg.phases + self.cfg.baseline}
            else Path(ref)
        )
        if not source.exists():
            raise InputError(
                f"phases: {self.phase.name}.init_from: {source} does not exist (train phase '{ref}' first)"
            )
        state, where = load_weights(source)
        own = model.state_dict()
        for name, tensor in state.items():
            if name in own and tuple(own[name].shape) != tuple(tensor.shape):
                raise InputError(
                    f"{where}: {name} has shape {list(tensor.shape)} but the model needs {list(own[name].shape)} "
                    f"(different vocabulary or model size?)"
                )
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.endswith("lm_head.decoder.weight")]:
            raise InputError(
                f"{where}: weights do not fit model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        # Recorded in DONE.json so the hand-off can be checked against the source's own weights.
        digest = state_dict_digest(model.state_dict())
        if self.is_main:
            print(
                f"[train] {self.phase.name}: initialized from {where} (weights sha256 {digest[:12]})",
                flush=True,
            )
        return {"source": str(where), "weights_sha256": digest}

    def _write_run_files(self) -> None:
        import yaml

        self.phase_dir.mkdir(parents=True, exist_ok=True)
        (self.phase_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(self.cfg), sort_keys=False))
        (self.phase_dir / "ds_config.json").write_text(json.dumps(self.ds_config, indent=2))
        if not (self.phase_dir / "tokenizer").exists():
            shutil.copytree(self.cfg.tokenizer_dir, self.phase_dir / "tokenizer")

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "tokens_seen": self.tokens_seen,
            "lang_samples": self.lang_samples(),
            "lang_tokens": [n * self.cfg.data.max_seq_len for n in self.lang_samples()],
            "langs": list(self.phase.langs),
            "phase": self.phase.name,
            "world_size": self.world,
        }

    def lang_samples(self) -> list[int]:
        """Samples drawn per language so far: a pure function of the stream position."""
        return self.stream.sampler.samples_per_language(self.samples_seen).tolist()

    def load_state_dict(self, state: dict) -> None:
        if state["langs"] != list(self.phase.langs):
            raise InputError(
                f"checkpoint languages {state['langs']} differ from phase {self.phase.name}'s {self.phase.langs}"
            )
        self.step, self.samples_seen, self.tokens_seen = (
            state["step"],
            state["samples_seen"],
            state["tokens_seen"],
        )

    def _find_resume(self) -> None:
        """Pick the checkpoint to resume from (before the engine exists: a world-size change needs config)."""
        tag = None
        if self.is_main and self.ckpt_root.is_dir():
            tag = ckpt.newest_intact(self.ckpt_root, log=self._print)
        box = [tag]
        dist.broadcast_object_list(box, src=0)  # one rank checksums; all agree on the tag
        self.resume_tag = self.load_tag = box[0]
        if self.resume_tag is None:
            return
        meta = CheckpointMeta.read(self.ckpt_root / self.resume_tag)
        saved_stage, stage = meta.zero_stage, self.ds_config["zero_optimization"].get("stage", 0)
        if saved_stage != stage:
            raise InputError(
                f"{self.ckpt_root / self.resume_tag} was saved with ZeRO-{saved_stage} but this run uses ZeRO-{stage}; "
                f"resume with the same stage, or start a new phase from its weights (init_from)"
            )
        if meta.world_size != self.world and stage == 3:
            # DeepSpeed 0.19's ZeRO-3 universal load restores weights exactly but not the optimizer
            # state (the loss trajectory drifts): refuse rather than resume silently off-course.
            raise InputError(
                f"{self.ckpt_root / self.resume_tag}: resuming ZeRO-3 on {self.world} ranks (saved on {meta.world_size}) "
                f"is not supported; resume on {meta.world_size} ranks, or convert it and start a new phase with init_from"
            )
        if meta.world_size != self.world and stage > 0:
            # ZeRO partitions optimizer state by rank: re-shard through DeepSpeed's universal checkpoint.
            self.load_tag = self._universal(self.resume_tag)
            self.ds_config["checkpoint"] = {**self.ds_config.get("checkpoint", {}), "load_universal": True}

    def _universal(self, tag: str) -> str:
        out = self.ckpt_root / f"{tag}_universal"
        if self.is_main and not out.exists():
            tmp = self.ckpt_root / f".{tag}_universal.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self._print(f"[train] world size changed: converting {tag} to a universal checkpoint")
            cmd = [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(self.ckpt_root / tag),
                "--output_folder",
                str(tmp),
                "--num_extract_workers",
                "1",
                "--num_merge_workers",
                "1",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise InputError(
                    f"cannot re-shard {self.ckpt_root / tag} for {self.world} ranks: {proc.stderr.strip().splitlines()[-1:]}"
                )
            for name in os.listdir(self.ckpt_root / tag):
                if name.startswith("rng_rank") or name == ckpt.META:
                    shutil.copy(self.ckpt_root / tag / name, tmp / name)
            os.replace(tmp, out)
        dist.barrier()
        return out.name

    def _resume(self) -> None:
        tag = self.load_tag
        if tag is None:
            return
        _, client = self.engine.load_checkpoint(str(self.ckpt_root), tag=tag, load_module_strict=True)
        if client is None:
            raise InputError(f"{self.ckpt_root / tag}: DeepSpeed could not load this checkpoint")
        self.load_state_dict(client["megameta"])
        rng_file = self.ckpt_root / tag / f"rng_rank{self.rank}.pt"
        if client["megameta"]["world_size"] == self.world and rng_file.exists():
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        else:
            self._print(
                f"[train] world size changed ({client['megameta']['world_size']} -> {self.world}): data stream continues, RNG reseeded"
            )
            seed_everything(self.cfg.train.seed + self.step)
        # Rows logged after this checkpoint by the interrupted run are replayed now: drop them.
        self._truncate_sample_log()
        self.log.truncate_after(self.step)
        self._print(
            f"[train] resumed {self.phase.name} from {self.resume_tag} (step {self.step}, {self.tokens_seen:,} tokens)"
        )

    def save(self) -> None:
        """Write checkpoint ``step_<step>`` atomically; on failure the previous checkpoints stay as they were."""
        tag = ckpt.tag_for(self.step)
        stage = ckpt.staging_dir(self.ckpt_root, tag)
        error = None
        if self.is_main:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            # Check space first: DeepSpeed's save has internal barriers, so a rank failing mid-write
            # would leave the others waiting until the collective timeout.
            need, free = self._checkpoint_bytes(), shutil.disk_usage(self.ckpt_root).free
            if free < need:
                error = f"not enough space: about {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free"
        error = self._agree(error)
        if error is None:
            error = self._write_checkpoint(stage, tag)
        error = self._agree(error)
        if error is None and self.is_main:
            meta = CheckpointMeta(
                **self.state_dict(),
                model=dump_config(self.model_cfg),
                config=dump_config(self.cfg),
                zero_stage=self.ds_config["zero_optimization"].get("stage", 0),
                precision=self.cfg.train.precision,
            )
            try:
                ckpt.finalize(self.ckpt_root, tag, meta)
                ckpt.prune(self.ckpt_root, self.cfg.train.keep_last, self.cfg.train.keep_every)
            except OSError as e:
                error = f"rank 0: {e}"
        error = self._agree(error)
        if (
            error is None
            and self.cfg.train.eval_suite_every
            and self.step % self.cfg.train.eval_suite_every == 0
        ):
            if self.is_main:
                self._run_eval_suite(tag)
            dist.barrier()
        if error is not None:
            if self.is_main:
                shutil.rmtree(stage, ignore_errors=True)
            latest = (
                (self.ckpt_root / ckpt.LATEST).read_text().strip()
                if (self.ckpt_root / ckpt.LATEST).exists()
                else "none"
            )
            raise MegaMetaError(
                f"saving checkpoint {self.ckpt_root / tag} failed ({error}); latest valid checkpoint is still {latest}"
            )

    def _log_samples(self, indices: np.ndarray) -> None:
        lang, chunk, epoch = self.stream.sampler.lookup(indices)
        path = self.phase_dir / "samples" / f"rank{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for row in zip(indices.tolist(), lang.tolist(), chunk.tolist(), epoch.tolist(), strict=True):
                fields = dict(zip(("sample", "lang", "chunk", "epoch"), row, strict=True))
                f.write(json.dumps({"step": self.step + 1, **fields}) + "\n")

    def _truncate_sample_log(self) -> None:
        path = self.phase_dir / "samples" / f"rank{self.rank}.jsonl"
        if path.exists():
            rows = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            path.write_text("".join(r + "\n" for r in rows))

    _STAGES = ("forward", "backward", "sync")

    def _heartbeat(self, micro: int, stage: str) -> None:
        """Record how far this rank got, so a collective timeout can name the rank that stopped."""
        path = self.phase_dir / "heartbeat" / f"rank{self.rank}"
        if micro == 0 and stage == "forward":
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.step + 1} {micro} {self._STAGES.index(stage)} {time.time():.0f}\n")
        self._progress_at = time.time()

    def _watchdog(self) -> None:
        """Fail the rank when a training step makes no progress for ``dist_timeout_s``.

        Backends differ in whether they time out a stuck collective at all (DeepSpeed's CPU shared-memory
        all-reduce spins forever), so a thread watches the heartbeat instead and exits with a report.
        """
        timeout = self.cfg.train.dist_timeout_s
        while True:
            time.sleep(min(5.0, timeout / 4))
            if self._in_step and time.time() - self._progress_at > timeout:
                msg = self._collective_failure(TimeoutError(f"no progress for {timeout}s"))
                print(f"megameta train: error: {msg}", file=sys.stderr, flush=True)
                os._exit(1)

    def _collective_failure(self, error: Exception) -> str:
        progress = {}
        for r in range(self.world):
            try:
                fields = (self.phase_dir / "heartbeat" / f"rank{r}").read_text().split()
                progress[r] = tuple(int(x) for x in fields[:3])
            except (OSError, ValueError):
                progress[r] = (-1, -1, -1)
        furthest = max(progress.values())
        behind = sorted(r for r, p in progress.items() if p < furthest)
        if behind:
            where = ", ".join(
                f"rank {r} stopped in step {progress[r][0]} ({self._STAGES[progress[r][2]]})" for r in behind
            )
        else:
            where = "every rank reached the same point (a peer process died or the network failed)"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"collective failed on rank {self.rank} in step {self.step + 1} after up to "
            f"train.dist_timeout_s={self.cfg.train.dist_timeout_s}s: {where} [{first}]"
        )

    def _run_eval_suite(self, tag: str) -> None:
        """The evaluation suite on checkpoint ``tag`` (converted to an HF dir), logged as ``eval/*`` scalars."""
        from megameta.convert import convert
        from megameta.evaluate.report import run_evaluation

        out = self.phase_dir / "eval_suite" / tag
        convert(self.ckpt_root / tag, out / "hf", tag=None, verify=False)
        report = run_evaluation(
            str(out / "hf"), self.cfg.corpus.dir, self.cfg.evaluate, str(out), progress=False
        )
        shutil.rmtree(out / "hf", ignore_errors=True)
        results = report["results"]
        scalars = {f"eval/mlm_loss_{k}": v["loss"] for k, v in (results.get("mlm") or {}).items()}
        for key in ("mean", "same_script_mean", "cross_script_mean"):
            if (results.get("retrieval") or {}).get(key) is not None:
                scalars[f"eval/retrieval_{key}"] = results["retrieval"][key]
        for lang, v in ((results.get("classify") or {}).get("langs") or {}).items():
            scalars[f"eval/topic_accuracy_{lang}"] = v["accuracy_mean"]
        self.log.scalars(scalars, self.step)
        self._print(f"[train] evaluation suite at step {self.step}: {out / 'report.md'}")

    def _write_checkpoint(self, stage: Path, tag: str) -> str | None:
        try:
            self.engine.save_checkpoint(
                str(stage), tag=tag, client_state={"megameta": self.state_dict()}, save_latest=False
            )
            torch.save(ckpt.rng_state(), stage / tag / f"rng_rank{self.rank}.pt")
            self.fault("save", self.step)
        except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as RuntimeError
            return f"rank {self.rank}: {e}".splitlines()[0]
        return None

    def _checkpoint_bytes(self) -> int:
        """Expected size of one checkpoint: the newest one's, else fp32 weights + Adam state (16 B/param)."""
        tags = ckpt.list_tags(self.ckpt_root)
        if tags:
            return sum(p.stat().st_size for p in (self.ckpt_root / tags[-1]).rglob("*") if p.is_file())
        return 16 * sum(p.numel() for p in self.engine.module.parameters()) + (1 << 20)

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a small host tensor over ranks (NCCL only reduces device tensors; gloo takes host ones)."""
        on_device = tensor.to(self.device)
        dist.all_reduce(on_device)
        return on_device.cpu()

    def _agree(self, error: str | None) -> str | None:
        """Every rank learns whether any rank failed (and rank 0's view of why)."""
        box = [error]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, box[0])
        return next((e for e in gathered if e is not None), None)

    # ---------------------------------------------------------------- loop
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    def _print(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def _rank_indices(self, micro: int) -> np.ndarray:
        mb = self.cfg.train.micro_batch_size
        start = self.samples_seen + (micro * self.world + self.rank) * mb
        return np.arange(start, start + mb, dtype=np.int64)

    def train_step(self) -> dict:
        """One optimizer step (all micro-batches); returns this rank's loss sums per language."""
        n_langs = len(self.phase.langs)
        loss_sum = torch.zeros(n_langs, dtype=torch.float64)
        loss_cnt = torch.zeros(n_langs, dtype=torch.float64)
        tokens = 0
        self.engine.train()
        for micro in range(self.cfg.train.grad_accum):
            indices = self._rank_indices(micro)
            batch = self.stream.batch(indices)
            if self.cfg.train.log_samples:
                self._log_samples(indices)
            self._heartbeat(micro, "forward")
            self.fault("forward", self.step + 1)
            out = self.engine(
                batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                labels=batch["labels"].to(self.device),
            )
            self._heartbeat(micro, "backward")
            self.fault("backward", self.step + 1)
            self.engine.backward(out.loss)
            self.engine.step()
            langs = batch["lang"][out.masked_rows.cpu()]
            loss_sum.index_add_(0, langs, out.token_losses.detach().double().cpu())
            loss_cnt.index_add_(0, langs, torch.ones_like(langs, dtype=torch.float64))
            tokens += int(batch["attention_mask"].sum())
        # One small collective per step: global token count, and whether any rank got a stop signal.
        self._heartbeat(self.cfg.train.grad_accum, "sync")
        sync = torch.tensor([float(tokens), 1.0 if self._signal is not None else 0.0], dtype=torch.float64)
        sync = self._all_reduce(sync)
        return {
            "loss_sum": loss_sum,
            "loss_cnt": loss_cnt,
            "tokens": int(sync[0].item()),
            "stop": bool(sync[1].item()),
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation MLM loss per language (each rank evaluates its share of fixed chunks)."""
        if self.valid is None:
            return {}
        self.engine.eval()
        mb = self.cfg.train.micro_batch_size
        langs = self.valid.langs
        sums = torch.zeros(len(langs), 2, dtype=torch.float64)
        for lang_id in range(len(langs)):
            for b in range(self.cfg.train.eval_batches):
                chunks = np.arange(mb) + (b * self.world + self.rank) * mb
                batch = self.valid.fixed_batch(lang_id, chunks)
                out = self.engine(
                    batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    labels=batch["labels"].to(self.device),
                )
                sums[lang_id, 0] += out.token_losses.double().sum().cpu()
                sums[lang_id, 1] += len(out.token_losses)
        sums = self._all_reduce(sums)
        self.engine.train()
        return {lang: (sums[i, 0] / sums[i, 1].clamp(min=1)).item() for i, lang in enumerate(langs)}

    def run(self) -> int:
        self.setup()
        cfg = self.cfg.train
        if self.step >= self.total_steps and (self.phase_dir / DONE).exists():
            self._print(f"[train] {self.phase.name} already complete ({self.step} steps)")
            return EXIT_OK
        self._print(
            f"[train] phase {self.phase.name}: langs {','.join(self.phase.langs)} | {self.total_steps} steps x "
            f"{self.global_batch} seqs x {self.cfg.data.max_seq_len} tokens | world {self.world} | "
            f"ZeRO {self.ds_config['zero_optimization'].get('stage', 0)} | {cfg.precision} | device {self.device.type}"
        )
        window = {
            "loss_sum": torch.zeros(len(self.phase.langs), dtype=torch.float64),
            "loss_cnt": torch.zeros(len(self.phase.langs), dtype=torch.float64),
            "tokens": 0,
        }
        t0 = time.time()
        self._in_step, self._progress_at = False, time.time()
        threading.Thread(target=self._watchdog, daemon=True, name="megameta-watchdog").start()
        while self.step < self.total_steps:
            try:
                self._in_step, self._progress_at = True, time.time()
                stats = self.train_step()
                self._in_step = False
            except RuntimeError as e:  # gloo/NCCL report timeouts and dead peers as RuntimeError subclasses
                raise MegaMetaError(self._collective_failure(e)) from None
            self.step += 1
            self.samples_seen += self.global_batch
            self.tokens_seen += stats["tokens"]
            for k in ("loss_sum", "loss_cnt"):
                window[k] += stats[k]
            window["tokens"] += stats["tokens"]
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                t0 = self._log(window, t0)
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.log.scalars({f"valid/loss_{k}": v for k, v in self.validate().items()}, self.step)
            if stats["stop"]:
                self._print(
                    f"[train] signal {self._signal or 'on another rank'}: saving checkpoint at step {self.step} and exiting for requeue"
                )
                self.save()
                self.log.close()
                return EXIT_REQUEUE
            if self.step % cfg.save_every == 0 and self.step < self.total_steps:
                self.save()
        # Finished: a late preemption signal must not kill ranks while they write the final state.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        valid = self.validate()
        self.log.scalars({f"valid/loss_{k}": v for k, v in valid.items()}, self.step)
        exists = [(self.ckpt_root / ckpt.tag_for(self.step)).exists() if self.is_main else None]
        dist.broadcast_object_list(exists, src=0)
        if not exists[0]:
            self.save()
        if self.is_main:
            done = {
                "phase": self.phase.name,
                "tag": ckpt.tag_for(self.step),
                "step": self.step,
                "tokens": self.tokens_seen,
                "valid_loss": valid,
                "init_from": self.init_source,
            }
            write_atomic(self.phase_dir / DONE, json.dumps(done, indent=2))
            summary = " ".join(f"{k}={v:.3f}" for k, v in valid.items())
            print(
                f"[train] {self.phase.name} done: {self.step} steps, {self.tokens_seen:,} tokens; valid loss {summary}",
                flush=True,
            )
        self.log.close()
        return EXIT_OK

    def _log(self, window: dict, t0: float) -> float:
        sums = self._all_reduce(torch.stack([window["loss_sum"], window["loss_cnt"]]))
        now = time.time()
        tokens = window["tokens"]
        lang_losses = {
            lang: (sums[0, i] / sums[1, i]).item()
            for i, lang in enumerate(self.phase.langs)
            if sums[1, i] > 0
        }
        loss = (sums[0].sum() / sums[1].sum().clamp(min=1)).item()
        lang_samples = self.lang_samples()
        total_lang = max(1, sum(lang_samples))
        dt = max(now - t0, 1e-9)
        scalars = {
            "train/loss": loss,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/tokens_per_s": tokens / dt,
            "train/samples_per_s": self.global_batch * self.cfg.train.log_every / dt,
            "train/tokens_seen": float(self.tokens_seen),
            **{f"train/loss_{k}": v for k, v in lang_losses.items()},
            **{f"data/share_{lang}": lang_samples[i] / total_lang for i, lang in enumerate(self.phase.langs)},
        }
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            scalars["train/grad_norm"] = float(grad_norm)
        scale = getattr(self.engine.optimizer, "cur_scale", None) or getattr(
            self.engine.optimizer, "loss_scale", None
        )
        if isinstance(scale, (int, float)) and self.cfg.train.precision == "fp16":
            scalars["train/loss_scale"] = float(scale)
        scalars.update(
            self.log.system_scalars(
                self.device, tokens / dt, self.model_cfg, self.cfg.data.max_seq_len, self.world
            )
        )
        self.log.scalars(scalars, self.step)
        self.log.console(self.step, self.tokens_seen, loss, scalars["train/lr"], tokens / dt, lang_losses)
        self.log.record(
            {
                "step": self.step,
                "samples_seen": self.samples_seen,
                "tokens_seen": self.tokens_seen,
                "loss": loss,
                "lr": scalars["train/lr"],
                "lang_loss": lang_losses,
            }
        )
        for k in ("loss_sum", "loss_cnt"):
            window[k].zero_()
        window["tokens"] = 0
        return now


def train_phase(cfg: RunConfig, phase_name: str) -> int:
    """Entry point of ``megameta train``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = Trainer(cfg, cfg.phase(phase_name))
    code = trainer.run()
    sys.stdout.flush()
    if dist.is_initialized():
        # Tear the process group down before exit: leaving it to interpreter shutdown can abort a rank
        # ("terminate called without an active exception") and turn a finished run into a failed job.
        dist.barrier()
        dist.destroy_process_group()
    return code
