"""LoRA training throughput: the published recipe against a tuned one, same effective batch (16).

Builds the full-size Voxtral architecture from `VoxtralConfig()` with random weights (no
download), freezes the audio tower, adds our LoRA, and trains on batches shaped like Big Bench
Audio (one 30-s chunk = 375 audio tokens, ~60 text tokens, answer tokens labelled). Prints and
returns samples/s, peak GPU memory and model FLOPs utilisation per variant.

    python benchmarks/train_step.py                      # on a GPU: published, tuned, tuned-4bit
    python benchmarks/train_step.py --device cpu --tiny  # CI smoke test with the tiny config
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch

EFFECTIVE_BATCH = 16
TEXT_TOKENS = 60
ANSWER_TOKENS = 3
AUDIO_TOKENS = 375
# Dense bf16 peak of the cards we expect (TFLOP/s), for model FLOPs utilisation.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0}


@dataclass
class Variant:
    name: str
    micro_batch: int
    gradient_checkpointing: bool
    attn_implementation: str = "sdpa"
    tf32: bool = False
    load_in_4bit: bool = False


PUBLISHED = Variant("published (batch 2 x accumulation 8, checkpointing)", 2, True)
TUNED = Variant("tuned (batch 16, no checkpointing, TF32, SDPA)", 16, False, tf32=True)
TUNED_4BIT = Variant("tuned 4-bit (batch 8 x 2, checkpointing; T4-sized)", 8, True, load_in_4bit=True)


def build_model(tiny: bool, variant: Variant, device: str, dtype: torch.dtype, lora_dropout: float = 0.05):
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from helpers.model import add_lora, freeze_audio_tower, lora_config
    from helpers.tiny import tiny_config

    config = tiny_config() if tiny else VoxtralConfig()
    config._attn_implementation = variant.attn_implementation
    torch.manual_seed(0)
    with torch.device(device if not variant.load_in_4bit else "cpu"):
        model = VoxtralForConditionalGeneration(config).to(dtype)
    if variant.load_in_4bit:
        model = quantize_4bit(model, dtype)
    freeze_audio_tower(model)
    torch.manual_seed(1)  # same LoRA initialisation for every variant
    model = add_lora(model, lora_config(lora_dropout=lora_dropout))
    if variant.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, config


def quantize_4bit(model, dtype):
    """NF4 weights for the language model's linear layers (as `load_in_4bit` would load them)."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and "language_model" in full:
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=dtype, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(module, child_name, q)
    return model.cuda()


def batch(config, size: int, device: str, dtype: torch.dtype) -> dict:
    vocab = config.text_config.vocab_size
    generator = torch.Generator().manual_seed(size)
    text = torch.randint(100, vocab, (size, TEXT_TOKENS), generator=generator)
    audio = torch.full((size, AUDIO_TOKENS), config.audio_token_id)
    input_ids = torch.cat([torch.tensor([[1, 3, 25]] * size), audio, text], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -ANSWER_TOKENS:] = input_ids[:, -ANSWER_TOKENS:]
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "input_features": torch.randn(size, 128, 3000, generator=generator).to(device, dtype),
    }


def model_flops_per_sample(model, config) -> float:
    """Forward+backward FLOPs the model must do per sample: the frozen audio tower runs forward
    only (no LoRA inside, inputs need no gradient); the language model forward and backward
    (~3x forward) over every token. Attention-score FLOPs are left out (small at 438 tokens)."""
    base = model.get_base_model()
    audio = sum(p.numel() for p in base.model.audio_tower.parameters())
    text = sum(p.numel() for n, p in base.named_parameters() if "audio_tower" not in n and "embed_tokens" not in n)
    tokens = 3 + AUDIO_TOKENS + TEXT_TOKENS
    return 2 * audio * 1500 + 3 * 2 * text * tokens


def lora_weights_after_one_step(variant: Variant, tiny: bool = True, device: str = "cpu") -> dict:
    """LoRA weights after one optimiser step on the same 16 samples, without dropout: a tuned
    variant must change how fast the step runs, not what it computes."""
    model, config = build_model(tiny, variant, device, torch.float32, lora_dropout=0.0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    full = batch(config, EFFECTIVE_BATCH, device, torch.float32)
    accumulation = EFFECTIVE_BATCH // variant.micro_batch
    for k in range(accumulation):
        part = {key: value[k * variant.micro_batch:(k + 1) * variant.micro_batch] for key, value in full.items()}
        (model(**part).loss / accumulation).backward()
    optimizer.step()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def run(variant: Variant, tiny: bool, device: str, steps: int, warmup: int) -> dict:
    on_gpu = device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else (torch.float16 if on_gpu else torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = variant.tf32
    torch.backends.cudnn.allow_tf32 = variant.tf32
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, config = build_model(tiny, variant, device, dtype)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    accumulation = EFFECTIVE_BATCH // variant.micro_batch
    micro = batch(config, variant.micro_batch, device, dtype)

    def optimizer_step():
        for _ in range(accumulation):
            loss = model(**micro).loss / accumulation
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        optimizer_step()
    if on_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer_step()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    samples_per_s = steps * EFFECTIVE_BATCH / seconds
    result = {**asdict(variant), "samples_per_s": round(samples_per_s, 3),
              "seconds_per_optimizer_step": round(seconds / steps, 4)}
    if on_gpu:
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        achieved = model_flops_per_sample(model, config) * samples_per_s / 1e12
        result.update(peak_memory_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      model_tflops=round(achieved, 1), mfu=round(achieved / peak, 3) if peak else None,
                      projected_3_epochs_900_samples_min=round(3 * 900 / samples_per_s / 60, 2))
    del model, optimizer
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-4bit", action="store_true")
    args = parser.parse_args(argv)
    variants = [PUBLISHED, TUNED]
    if args.device.startswith("cuda") and not args.no_4bit:
        variants.append(TUNED_4BIT)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    results = {"device": device_name, "tiny": args.tiny, "effective_batch": EFFECTIVE_BATCH, "variants": []}
    for variant in variants:
        try:
            results["variants"].append(run(variant, args.tiny, args.device, args.steps, args.warmup))
        except (RuntimeError, ImportError) as error:  # out of memory, or bitsandbytes missing
            results["variants"].append({**asdict(variant), "error": f"{type(error).__name__}: {str(error)[:200]}"})
        print(json.dumps(results["variants"][-1]))
    published, tuned = results["variants"][0], results["variants"][1]
    if "samples_per_s" in published and "samples_per_s" in tuned:
        results["tuned_over_published"] = round(tuned["samples_per_s"] / published["samples_per_s"], 2)
        print(f"tuned / published: {results['tuned_over_published']}x on {device_name}")
    return results


if __name__ == "__main__":
    main()
