"""Short tiny-profile training runs shared by the tests of resuming, checkpoints, adapters and killed runs."""
import shutil

import torch
from peft import get_peft_model_state_dict
from transformers import TrainerCallback

from helpers.loading import load_model_and_processor
from helpers.lora import add_lora, freeze_audio_tower, lora_config
from helpers.training import make_trainer

# float32 on CPU: every resume here matched bit for bit (measured 0.0); one lost, repeated or
# re-drawn step moves the weights by ~1e-3.
TOLERANCE = 1e-5


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


class Recorder(TrainerCallback):
    def __init__(self):
        self.begins, self.steps = [], []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begins.append(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append(state.global_step + 1)


def tiny_trainer(profile, rows, output_dir, seed=0, lora_dropout=None, eval_rows=None, cache_tower_output=True,
                 **overrides):
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(profile)
    config = lora_config() if lora_dropout is None else lora_config(lora_dropout=lora_dropout)
    model = add_lora(freeze_audio_tower(model), config)
    recorder = Recorder()
    settings = dict(max_steps=4, save_steps=1, logging_steps=1, disable_tqdm=True,
                    per_device_train_batch_size=2, gradient_accumulation_steps=2)
    settings.update(overrides)
    trainer = make_trainer(model, processor, profile, rows, eval_rows, output_dir=output_dir, callbacks=[recorder],
                           precompute=False, cache_tower_output=cache_tower_output, **settings)
    return trainer, recorder


def lora_weights(trainer) -> dict:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "out")
