"""`python -m tutorial_kit.train` in which process 1 runs out of GPU memory in its second step (simulated).

Run under a launcher by tests/scenarios/test_train_distributed.py:
    torchrun --nproc_per_node 2 tests/scenarios/out_of_memory_worker.py ARGS
"""
import os
import sys

import torch
from transformers import Trainer

from tutorial_kit import train

RANK = int(os.environ.get("RANK", "0"))
real_training_step = Trainer.training_step


def training_step(self, *args, **kwargs):
    if RANK == 1 and self.state.global_step == 1:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    return real_training_step(self, *args, **kwargs)


Trainer.training_step = training_step
sys.exit(train.main())
