"""One training phase under DeepSpeed: load; loop {train_step, log, validate, save}; finish.

The trainer's state is one object: model, optimizer, scheduler and loss scaler live in the
DeepSpeed engine; step, samples and tokens seen live in :meth:`Trainer.state_dict`; RNG states
are saved per rank. Resume is not a special path: a fresh run is a resume from step 0. Saving
and resuming belong to the :class:`~megameta.train.checkpointer.Checkpointer`, liveness to
:mod:`megameta.train.watchdog`, and the evaluation suite to :mod:`megameta.evaluate.hook`.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist

from megameta import checkpoint as ckpt
from megameta.checkpoint import CheckpointMeta
from megameta.config import RunConfig, dump_config
from megameta.data.tokenizer import Vocab
from megameta.errors import EXIT_OK, EXIT_REQUEUE, InputError
from megameta.fileio import truncate_jsonl_after
from megameta.train import build, metrics
from megameta.train.checkpointer import Checkpointer, load_init_weights
from megameta.train.dist import accelerator_device, all_reduce_host, init_distributed
from megameta.train.ds_config import render_ds_config
from megameta.train.faults import FaultInjector
from megameta.train.guard import DivergenceGuard
from megameta.train.prefetch import Prefetcher, model_inputs, rank_batches
from megameta.train.watchdog import Heartbeat


class Trainer:
    """Trains phase ``name`` of ``cfg``; ``run()`` returns the process exit code."""

    def __init__(self, cfg: RunConfig, name: str):
        self.cfg, self.phase = cfg, cfg.resolve_phase(name)
        self.layout = cfg.layout.phase(name)
        self.step = self.samples_seen = self.tokens_seen = 0
        self.init_source: dict | None = None
        self._signal: int | None = None

    # ---------------------------------------------------------------- set-up
    def setup(self) -> None:
        train = self.cfg.train
        self.rank, self.local_rank, self.world = init_distributed(train.dist_timeout_s)
        self.is_main = self.rank == 0
        self.fault = FaultInjector(self.rank)
        self.heartbeat = Heartbeat.for_run(train, self.layout.dir, self.rank, self.world)
        self.device, acc = accelerator_device(self.local_rank)
        build.set_matmul_precision(train, self.device)
        self.ds_config = render_ds_config(
            train, self.world, self.cfg.optim.grad_clip, acc.is_fp16_supported(), acc.is_bf16_supported()
        )
        self.global_batch = self.ds_config["train_batch_size"]
        self.total_steps = self.phase.total_steps(self.global_batch)
        self.log = metrics.MetricLogger(self.layout, self.is_main, train.tensorboard, self.total_steps)
        self.vocab = Vocab(self.cfg.tokenizer_dir)  # the ids, without importing transformers
        self.stream, self.valid = build.build_streams(
            self.cfg, self.phase, self.vocab, self.total_steps * self.global_batch
        )
        build.seed_everything(train.seed)
        model = self._model()
        self.log.describe_system(
            self.device, self.model_cfg, self.cfg.data.max_seq_len, self.world, self.cfg.data.mask_prob
        )
        self.checkpointer = Checkpointer(self.layout, self.rank, self.world, self._print)
        self.checkpointer.find(self.ds_config, build.data_stream(self.cfg, self.phase))
        self.engine, self.scheduler = build.build_engine(
            self.cfg, self.phase, model, self.ds_config, self.device, self.total_steps
        )
        self.guard = DivergenceGuard(train.guard, self.engine, self.fault, self._print)
        if self.is_main:
            build.write_run_files(self.layout, self.cfg, self.ds_config)
        self._resume()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _model(self) -> torch.nn.Module:
        self.model_cfg = build.model_config(self.cfg, len(self.vocab))
        model = build.build_model(self.model_cfg, self.ds_config)
        if self.phase.init_from is not None:
            self.init_source = load_init_weights(model, self.phase.init_from, self.phase.name, self._print)
        return model

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        lang_samples = self.stream.sampler.samples_per_language(self.samples_seen).tolist()
        return {"step": self.step, "samples_seen": self.samples_seen, "tokens_seen": self.tokens_seen,
                "lang_samples": lang_samples, "lang_tokens": [n * self.cfg.data.max_seq_len for n in lang_samples],
                "langs": list(self.phase.langs), "phase": self.phase.name, "world_size": self.world,
                **self.guard.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if state["langs"] != list(self.phase.langs):
            raise InputError(
                f"checkpoint languages {state['langs']} differ from phase {self.phase.name}'s {self.phase.langs}"
            )
        self.step, self.samples_seen, self.tokens_seen = (
            state[k] for k in ("step", "samples_seen", "tokens_seen")
        )
        self.guard.load_state_dict(state)
        self.samples_seen = self.guard.position(self.samples_seen)  # a rollback's window starts here

    def _resume(self) -> None:
        loaded = self.checkpointer.load(self.engine)
        if loaded is not None:
            state, rng_restored = loaded
            self.load_state_dict(state)
            if not rng_restored:
                self._print(
                    f"[train] world size changed ({state['world_size']} -> {self.world}): data stream continues, RNG reseeded"
                )
                build.seed_everything(self.cfg.train.seed + self.step)
            self._print(f"[train] resumed {self.phase.name} from {self.checkpointer.resume_tag} "
                        f"(step {self.step}, {self.tokens_seen:,} tokens)")  # fmt: skip
        # Rows logged past this step by an interrupted run (one killed before its first checkpoint
        # too) are replayed now: drop them.
        truncate_jsonl_after(self.layout.sample_log(self.rank), self.step)
        self.log.truncate_after(self.step)

    def save(self) -> None:
        """Checkpoint the current step (atomically); then the evaluation suite when it is due."""
        train = self.cfg.train
        state = self.state_dict()
        meta = CheckpointMeta(**state, model=dump_config(self.model_cfg), config=dump_config(self.cfg),
                              zero_stage=self.ds_config["zero_optimization"].get("stage", 0),
                              precision=train.precision, data_stream=build.data_stream(self.cfg, self.phase))  # fmt: skip
        tag = self.checkpointer.save(
            self.engine, self.step, state, meta, train.keep_last, train.keep_every, self.fault
        )
        if train.eval_suite_every and self.step % train.eval_suite_every == 0:
            if self.is_main:
                from megameta.evaluate.hook import run_eval_suite

                scalars = run_eval_suite(
                    self.layout, self.step, tag, self.cfg.corpus.dir, self.cfg.evaluate, self._print
                )
                self.log.scalars(scalars, self.step)
            dist.barrier()

    # ---------------------------------------------------------------- loop
    def _on_signal(self, signum, frame) -> None:
        self._signal = signum

    def _print(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def train_step(self) -> dict:
        """One optimizer step (all micro-batches); returns this rank's loss sums per language."""
        train, window = self.cfg.train, metrics.StepWindow(len(self.phase.langs), self.device)
        self.engine.train()
        for micro in range(train.grad_accum):
            indices, batch = next(self.batches)
            if train.log_samples:
                metrics.append_sample_log(
                    self.layout.sample_log(self.rank), self.step + 1, indices, self.stream.sampler
                )
            self._micro_step(micro, batch, window)
        # One small collective per step: global token count, and whether any rank got a stop signal.
        self.heartbeat.beat(train.grad_accum, "sync")
        sync = all_reduce_host(
            self.device,
            torch.tensor([float(window.tokens), float(self._signal is not None)], dtype=torch.float64),
        )
        window.tokens = int(sync[0].item())
        return {"window": window, "stop": bool(sync[1].item())}

    def _micro_step(self, micro: int, batch: dict, window: metrics.StepWindow) -> None:
        """Forward, backward and (at the accumulation boundary) optimizer step of one micro-batch.

        Nothing here waits for the device: masked positions, padding and token count come from the
        host-side batch, and the loss sums stay on the device (tests/train/test_no_sync.py)."""
        self.heartbeat.beat(micro, "forward")
        self.fault("forward", self.step + 1)
        out = self._forward(batch)
        self.heartbeat.beat(micro, "backward")
        self.fault("backward", self.step + 1)
        self.engine.backward(self.guard.watch(out.loss, self.step + 1))
        self.guard.step()
        window.add(
            batch["masked_lang"].to(self.device, non_blocking=True), out.token_losses, batch["n_tokens"]
        )

    def _forward(self, batch: dict):
        return self.engine(**model_inputs(batch, self.device))

    def valid_loss(self) -> dict[str, float]:  # validation MLM loss per language
        return metrics.valid_loss(self.engine, self.valid, self.cfg.train, self.rank, self.world, self.device)

    def train_text_loss(self) -> dict[str, float]:
        """The validation measure on the training text (fixed chunks, eval mode, masks no step used):
        held-out loss far above it means the language was memorized."""
        return metrics.valid_loss(
            self.engine, self.stream, self.cfg.train, self.rank, self.world, self.device
        )

    def run(self) -> int:
        self.setup()
        if self.step >= self.total_steps and self.layout.done.exists():
            self._print(f"[train] {self.phase.name} already complete ({self.step} steps)")
            return EXIT_OK
        self._print(build.phase_banner(self.cfg, self.phase, self.total_steps, self.global_batch, self.world,
                                 self.ds_config, self.device))  # fmt: skip
        window = metrics.StepWindow(len(self.phase.langs), self.device)
        self.batches = self._batches()
        self.log.start_window()
        self.heartbeat.start_watchdog()
        with self.heartbeat.collective_failures_reported():
            while self.step < self.total_steps:
                stats = self._step()
                if self.guard.end_step(self.step + 1, self.samples_seen, self.global_batch):
                    self._rollback()
                    continue
                self.step += 1
                self.samples_seen = self.guard.position(self.samples_seen + self.global_batch)
                self.tokens_seen += stats["window"].tokens
                window.merge(stats["window"])
                self._after_step(window)
                if stats["stop"]:
                    self._print(
                        f"[train] signal {self._signal or 'on another rank'}: saving checkpoint at step {self.step} and exiting for requeue"
                    )
                    self.batches.close()
                    self.save()
                    self.log.close()
                    return EXIT_REQUEUE
                if self.step % self.cfg.train.save_every == 0 and self.step < self.total_steps:
                    self.save()
            return self._finish()

    def _batches(self):
        """This rank's micro-batches from the resumed data position on, built ``train.prefetch`` ahead."""
        train = self.cfg.train
        source = rank_batches(self.stream, self.samples_seen, self.guard.position, self.rank, self.world,
                              train.micro_batch_size, train.grad_accum, self.device.type == "cuda")  # fmt: skip
        return Prefetcher(source, train.prefetch) if train.prefetch else source

    def _rollback(self) -> None:
        """K bad steps in a row: back to the last checkpoint before them (the guard's counters survive),
        then on past their data window; the rolled-back steps' log rows are dropped."""
        first_bad = self.guard.rollback_window(self.step + 1, self.samples_seen + self.global_batch)
        counters = self.guard.state_dict()
        state, _, tag = self.checkpointer.rollback(self.engine, first_bad)
        self.load_state_dict({**state, **counters})
        self.batches.close()  # built ahead from the abandoned position
        self.batches = self._batches()
        truncate_jsonl_after(self.layout.sample_log(self.rank), self.step)
        self.log.truncate_after(self.step)
        self._print(f"[guard] rolled back to {tag} (step {self.step})")

    def _step(self) -> dict:
        """``train_step`` between the heartbeats that tell the watchdog and the stuck-rank report where
        this rank is."""
        self.heartbeat.enter_step(self.step + 1)
        stats = self.train_step()
        self.heartbeat.leave_step()
        return stats

    def _after_step(self, window: metrics.StepWindow) -> None:
        train = self.cfg.train
        if self.step % train.log_every == 0 or self.step == self.total_steps:
            self._log(window)
        if train.eval_every and self.step % train.eval_every == 0:
            self.log.scalars({f"valid/loss_{k}": v for k, v in self.valid_loss().items()}, self.step)

    def _finish(self) -> int:
        # Finished: a late preemption signal must not kill ranks while they write the final state.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self.batches.close()
        valid, seen = self.valid_loss(), self.train_text_loss()
        self.log.scalars({f"valid/loss_{k}": v for k, v in valid.items()}, self.step)
        self.log.scalars({f"train_text/loss_{k}": v for k, v in seen.items()}, self.step)
        if not self.checkpointer.exists(self.step):
            self.save()
        self.checkpointer.write_done({"phase": self.phase.name, "tag": ckpt.tag_for(self.step), "step": self.step,
                                      "tokens": self.tokens_seen, "valid_loss": valid, "train_text_loss": seen,
                                      "init_from": self.init_source})  # fmt: skip
        summary = " ".join(f"{k}={v:.3f}" for k, v in valid.items())
        self._print(
            f"[train] {self.phase.name} done: {self.step} steps, {self.tokens_seen:,} tokens; valid loss {summary}"
        )
        self.log.close()
        return EXIT_OK

    def _log(self, window: metrics.StepWindow) -> None:
        sums = all_reduce_host(self.device, torch.stack([window.loss_sum, window.loss_cnt]))
        scalars = {"train/lr": self.scheduler.get_last_lr()[0], "train/tokens_seen": float(self.tokens_seen),
                   **metrics.data_shares(self.stream.sampler, self.samples_seen, self.phase.langs)}  # fmt: skip
        scalars.update(metrics.engine_scalars(self.engine, self.cfg.train.precision))
        scalars.update({f"train/{k}": float(v) for k, v in self.guard.counts().items()})
        row = {"step": self.step, "samples_seen": self.samples_seen, "tokens_seen": self.tokens_seen,
               **self.guard.counts()}  # fmt: skip
        samples = self.global_batch * window.steps
        self.log.log_window(self.step, self.phase.langs, sums, window.tokens, samples, scalars, row)
        window.reset()
