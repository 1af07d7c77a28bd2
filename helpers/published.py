"""The published recipe's approach, reimplemented so notebooks, tests and benchmarks can show
its defects and measure it beside ours. Do not train with these.

Source: the Hugging Face transformers Audio-text-to-text task guide, Voxtral version
(https://huggingface.co/docs/transformers/tasks/audio_text_to_text); its defects, each with the
test that reproduces it, are listed in the README ("Where the published guide is wrong").

Shown in notebooks 02 and 03 beside our versions.
"""
from __future__ import annotations

import torch

from helpers.collator import IGNORE_INDEX
from helpers.loading import model_device, model_dtype
from helpers.tasks import build_conversation

# Bare names: they match the audio encoder's q/k/v_proj too.
PUBLISHED_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def published_collate(processor, rows: list[dict]) -> dict:
    """The guide's collator: pad the prompts through the processor, then keep
    `ids[:sum(attention_mask)]` of each, which is wrong when the tokenizer pads on the left."""
    conversations = [build_conversation(row) for row in rows]
    prompts = processor.apply_chat_template(conversations, tokenize=True, return_dict=True,
                                            add_generation_prompt=True)
    sequences, labels = [], []
    for i, row in enumerate(rows):
        length = int(prompts["attention_mask"][i].sum())
        prompt = prompts["input_ids"][i][:length].tolist()  # the defect: assumes right padding
        answer = processor.tokenizer.encode(str(row["official_answer"]), add_special_tokens=False)
        answer.append(processor.tokenizer.eos_token_id)
        sequences.append(prompt + answer)
        labels.append([IGNORE_INDEX] * len(prompt) + answer)
    longest = max(len(s) for s in sequences)
    pad = processor.tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (longest - len(s)) for s in sequences]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in sequences]),
        "labels": torch.tensor([row + [IGNORE_INDEX] * (longest - len(row)) for row in labels]),
        "input_features": prompts["input_features"],
    }


@torch.inference_mode()
def published_generate(model, processor, row: dict, max_new_tokens: int = 16) -> str:
    """The guide's inference: one sample at a time, audio as a base64 WAV through the chat template."""
    inputs = processor.apply_chat_template(build_conversation(row), tokenize=True, return_dict=True,
                                           add_generation_prompt=True)
    dtype, device = model_dtype(model), model_device(model)
    inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=processor.tokenizer.pad_token_id)
    return processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
