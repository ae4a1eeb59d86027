"""Test support, run under a launcher: load phase ``meta``'s newest checkpoint on this launch's world size
and save it again at once into OUT_DIR, so the two saves can be compared exactly.

usage: python -m torch.distributed.run --nproc_per_node N tests/train/resave.py CONFIG OUT_DIR [overrides]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from megameta.config import load_config
from megameta.train.dist import exit_process
from megameta.train.trainer import Trainer

if __name__ == "__main__":
    config, out, *overrides = sys.argv[1:]
    trainer = Trainer(load_config(config, overrides), "meta")
    trainer.setup()
    trainer.checkpointer.root = Path(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    trainer.save()
    dist.barrier()
    dist.destroy_process_group()
    exit_process(0)
