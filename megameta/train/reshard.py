"""Loading a ZeRO checkpoint exactly: the two fixes DeepSpeed 0.19 needs.

**Another world size.**
ZeRO 1-3 partition the optimizer state by rank, so :class:`~megameta.train.checkpointer.Checkpointer`
re-shards through DeepSpeed's universal checkpoint (``ds_to_universal``: one fp32 master, ``exp_avg`` and
``exp_avg_sq`` file per parameter), which every stage then loads for its own world size. ZeRO-1/2 pair
each parameter group with its saved twin; DeepSpeed 0.19's ZeRO-3 loader
(``DeepSpeedZeroOptimizer_Stage3.load_hp_checkpoint_state_from_checkpoint_dir_stage3``) instead copies
saved group 0's hyperparameters into *every* group, so the no-decay group (biases, LayerNorm) silently
gets weight decay after the resume. It also hands every sub-group the *same* Adam ``step`` tensor, so
each optimizer step then advances the step count once per sub-group (bias correction drifts from the
first step after the resume). :func:`zero3_group_pairing` restores each group's own saved hyperparameters
and gives each sub-group its own step counter right after that loader runs, for one load only.

**CPU Adam (ZeRO offload).** DeepSpeed's C++ CPU Adam keeps the bias-correction powers beta^t as running
float products, one multiplication per step (``IncrementStep`` in ``csrc/includes/cpu_adam.h``). A fresh
optimizer resumed at step s computes ``pow(beta, s + 1)`` instead, which differs in the last bits, and the
resumed run drifts from the uninterrupted one from its first step on. :func:`replay_cpu_adam_steps`
rebuilds the same running product after a load.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def zero3_group_pairing(engine) -> Iterator[None]:
    """While active, a ZeRO-3 universal load into ``engine`` gives group i the saved group i's lr,
    weight decay, betas, eps (and the rest); a no-op for other stages."""
    opt = engine.optimizer
    load = getattr(opt, "load_hp_checkpoint_state_from_checkpoint_dir_stage3", None)
    if load is None:
        yield
        return

    def paired_load(checkpoint_dir: str) -> None:
        load(checkpoint_dir)
        from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT

        saved = torch.load(os.path.join(checkpoint_dir, "zero", "optimizer_state.pt"), weights_only=False)
        saved_groups = saved[OPTIMIZER_STATE_DICT]["param_groups"]
        if len(saved_groups) != len(opt.optimizer.param_groups):
            raise RuntimeError(
                f"{checkpoint_dir}: {len(saved_groups)} saved parameter groups, "
                f"the optimizer has {len(opt.optimizer.param_groups)}"
            )
        for group, twin in zip(opt.optimizer.param_groups, saved_groups, strict=True):
            group.update({k: v for k, v in twin.items() if k != "params"})
        for flat in opt.fp32_partitioned_groups_flat:
            state = opt.optimizer.state[flat]
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()  # one counter per sub-group, not one shared by all

    opt.load_hp_checkpoint_state_from_checkpoint_dir_stage3 = paired_load  # this instance, this load
    try:
        yield
    finally:
        del opt.load_hp_checkpoint_state_from_checkpoint_dir_stage3


def replay_cpu_adam_steps(engine) -> int:
    """Replay DeepSpeed CPU Adam's bias-correction product up to the loaded step (a no-op for other
    optimizers); returns the step replayed to.

    Steps 1..s go through ``adam_update`` on a one-element scratch tensor with lr 0 and no weight decay,
    which touches nothing but the C++ optimizer's beta^t products: a few microseconds a step.
    """
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    opt = getattr(engine.optimizer, "optimizer", engine.optimizer)
    if not isinstance(opt, DeepSpeedCPUAdam):
        return 0
    step = max((int(state["step"]) for state in opt.state.values() if "step" in state), default=0)
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    scratch = [torch.zeros(1) for _ in range(4)]  # param, grad, exp_avg, exp_avg_sq
    for t in range(1, step + 1):
        opt.ds_opt_adam.adam_update(opt.opt_id, t, 0.0, beta1, beta2, group["eps"], 0.0, group["bias_correction"],
                                    *scratch)  # fmt: skip
    return step
