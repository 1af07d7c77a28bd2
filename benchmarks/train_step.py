"""LoRA training throughput: the published recipe against a tuned one, same effective batch (16).

Builds the full-size Voxtral architecture from `VoxtralConfig()` with random weights (no
download), freezes the audio tower, adds our LoRA, and trains on batches shaped like Big Bench
Audio (one 30-s chunk = 375 audio tokens, ~60 text tokens, answer tokens labelled). Prints and
returns samples/s, peak GPU memory and model FLOPs utilisation per variant.

    python -m benchmarks.train_step                      # on a GPU: published, tuned, tuned-4bit
    python -m benchmarks.train_step --variants batch8,batch16-checkpointing --chunks 2 --profile
    python -m benchmarks.train_step --device cpu --tiny  # CI smoke test with the tiny config
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

EFFECTIVE_BATCH = 16
TEXT_TOKENS = 60
ANSWER_TOKENS = 3
AUDIO_TOKENS = 375  # per 30-s chunk
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
# In-between settings, to see what smaller GPUs can afford (peak memory against speed).
VARIANTS = {
    "published": PUBLISHED, "tuned": TUNED, "tuned-4bit": TUNED_4BIT,
    "batch8": Variant("batch 8 x 2, no checkpointing", 8, False, tf32=True),
    "batch4": Variant("batch 4 x 4, no checkpointing", 4, False, tf32=True),
    "batch16-checkpointing": Variant("batch 16, checkpointing", 16, True, tf32=True),
    "batch8-checkpointing": Variant("batch 8 x 2, checkpointing", 8, True, tf32=True),
    "batch4-checkpointing": Variant("batch 4 x 4, checkpointing", 4, True, tf32=True),
    "4bit-batch4-checkpointing": Variant("4-bit, batch 4 x 4, checkpointing", 4, True, load_in_4bit=True),
}


def software() -> dict:
    """Date and versions that a benchmark's numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "bitsandbytes", "mistral_common"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def full_size_config():
    """Voxtral-Mini-3B's architecture (4.68B parameters); the audio token id is the real model's."""
    from transformers import VoxtralConfig

    from tutorial_kit.tiny import AUDIO_TOKEN_ID

    return VoxtralConfig(audio_token_id=AUDIO_TOKEN_ID)


def build_model(tiny: bool, variant: Variant, device: str, dtype: torch.dtype, lora_dropout: float = 0.05):
    from transformers import VoxtralForConditionalGeneration

    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from tutorial_kit.tiny import tiny_config

    config = tiny_config() if tiny else full_size_config()
    config._attn_implementation = variant.attn_implementation
    if variant.load_in_4bit:
        model = load_4bit(config, dtype)
    else:
        torch.manual_seed(0)
        with torch.device(device):
            model = VoxtralForConditionalGeneration(config).to(dtype)
    freeze_audio_tower(model)
    torch.manual_seed(1)  # same LoRA initialisation for every variant
    model = add_lora(model, lora_config(lora_dropout=lora_dropout))
    if variant.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, config


def load_4bit(config, dtype: torch.dtype):
    """Random weights saved once, then loaded through `from_pretrained` with the tutorial's own
    4-bit settings (`helpers.hardware.quantization_config`), as a T4 user's notebook loads them."""
    import tempfile

    from transformers import VoxtralForConditionalGeneration

    from helpers.hardware import quantization_config

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        with torch.device("cuda"):
            VoxtralForConditionalGeneration(config).to(dtype).save_pretrained(folder)
        torch.cuda.empty_cache()
        return VoxtralForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, quantization_config=quantization_config(dtype), device_map={"": 0})


def batch(config, size: int, device: str, dtype: torch.dtype, chunks: int = 1) -> dict:
    vocab = config.text_config.vocab_size
    generator = torch.Generator().manual_seed(size)
    text = torch.randint(100, vocab, (size, TEXT_TOKENS), generator=generator)
    audio = torch.full((size, chunks * AUDIO_TOKENS), config.audio_token_id)
    input_ids = torch.cat([torch.tensor([[1, 3, 25]] * size), audio, text], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -ANSWER_TOKENS:] = input_ids[:, -ANSWER_TOKENS:]
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "input_features": torch.randn(size * chunks, 128, 3000, generator=generator).to(device, dtype),
    }


def parameter_counts(config) -> tuple[int, int, int]:
    """(audio tower, output head, the rest) parameters of the architecture, counted on the meta device.
    The input embeddings are left out: a lookup, no arithmetic."""
    from transformers import VoxtralForConditionalGeneration

    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(config)
    tower = sum(p.numel() for p in model.model.audio_tower.parameters())
    head = model.lm_head.weight.numel()
    rest = sum(p.numel() for n, p in model.named_parameters()
               if "audio_tower" not in n and "embed_tokens" not in n and not n.startswith("lm_head"))
    return tower, head, rest


def model_flops_per_sample(config, chunks: int = 1) -> float:
    """FLOPs one training sample needs, counted from the architecture (a 4-bit model's packed
    weights would undercount). The frozen audio tower runs forward only (2 FLOPs per weight per
    position, 1500 positions per 30-s chunk). The language model runs forward (2) and backward
    for the activations only (2): its weights are frozen, so no weight gradients, and LoRA's own
    are negligible. Attention scores are left out (small at 438 tokens); so is the recomputation
    that gradient checkpointing adds, which is overhead, not model FLOPs."""
    audio, head, rest = parameter_counts(config)
    tokens = 3 + chunks * AUDIO_TOKENS + TEXT_TOKENS
    return 2 * audio * 1500 * chunks + 4 * (rest + head) * tokens


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timer or memory reading sees all of it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def optimizer_step(model, optimizer, micro_batches: list[dict]) -> None:
    """One optimiser step over the effective batch, accumulated over `micro_batches`."""
    for micro in micro_batches:
        (model(**micro).loss / len(micro_batches)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def lora_weights_after_one_step(variant: Variant, tiny: bool = True, device: str = "cpu") -> dict:
    """LoRA weights after one optimiser step on the same 16 samples, without dropout: a tuned
    variant must change how fast the step runs, not what it computes."""
    model, config = build_model(tiny, variant, device, torch.float32, lora_dropout=0.0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    full = batch(config, EFFECTIVE_BATCH, device, torch.float32)
    size = variant.micro_batch
    optimizer_step(model, optimizer, [{key: value[k:k + size] for key, value in full.items()}
                                      for k in range(0, EFFECTIVE_BATCH, size)])
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def run(variant: Variant, tiny: bool, device: str, dtype: torch.dtype, steps: int, warmup: int,
        profile: bool = False, chunks: int = 1) -> dict:
    on_gpu = device.startswith("cuda")
    torch.backends.cuda.matmul.allow_tf32 = variant.tf32
    torch.backends.cudnn.allow_tf32 = variant.tf32
    if on_gpu:
        torch.cuda.empty_cache()
    model, config = build_model(tiny, variant, device, dtype)
    if on_gpu:  # the peak then counts the model as loaded plus training, not the one-off build
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    # Timing reuses one micro-batch: the data is not what is measured.
    micro_batches = [batch(config, variant.micro_batch, device, dtype, chunks)] * (EFFECTIVE_BATCH // variant.micro_batch)

    for _ in range(warmup):
        optimizer_step(model, optimizer, micro_batches)
    if profile:  # where one optimiser step's time goes, by operator
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
        with torch.profiler.profile(activities=activities) as profiler:
            optimizer_step(model, optimizer, micro_batches)
            synchronize(device)
        print(f"-- profile of one optimiser step: {variant.name}")
        print(profiler.key_averages().table(sort_by="cuda_time_total" if on_gpu else "cpu_time_total", row_limit=15))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer_step(model, optimizer, micro_batches)
    synchronize(device)
    seconds = time.perf_counter() - start
    samples_per_s = steps * EFFECTIVE_BATCH / seconds
    result = {**asdict(variant), "samples_per_s": round(samples_per_s, 3),
              "seconds_per_optimizer_step": round(seconds / steps, 4)}
    if on_gpu:
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        achieved = model_flops_per_sample(config, chunks) * samples_per_s / 1e12
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
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--variants", help=f"comma-separated, from {', '.join(VARIANTS)} "
                                           "(default: published,tuned, and tuned-4bit on a GPU)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per variant")
    parser.add_argument("--chunks", type=int, default=1, help="30-s audio chunks per sample (2: clips over 30 s)")
    args = parser.parse_args(argv)
    from helpers.hardware import pick_dtype

    on_gpu = args.device.startswith("cuda")
    if args.variants:
        unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        variants = [VARIANTS[name] for name in args.variants.split(",")]
    else:
        variants = [PUBLISHED, TUNED] + ([TUNED_4BIT] if on_gpu and not args.no_4bit else [])
    device_name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    dtype = pick_dtype() if on_gpu else torch.float32  # fp16 on a T4
    results = {"device": device_name, "tiny": args.tiny, "effective_batch": EFFECTIVE_BATCH, "audio_chunks": args.chunks,
               "dtype": str(dtype).removeprefix("torch."), **software(), "variants": []}
    for variant in variants:
        try:
            results["variants"].append(
                run(variant, args.tiny, args.device, dtype, args.steps, args.warmup, args.profile, args.chunks))
        except (RuntimeError, ImportError) as error:  # out of memory, or bitsandbytes missing
            results["variants"].append({**asdict(variant), "error": f"{type(error).__name__}: {str(error)[:300]}"})
            if on_gpu:
                torch.cuda.empty_cache()
        print(json.dumps(results["variants"][-1]))
    measured = {v["name"]: v for v in results["variants"]}
    published, tuned = measured.get(PUBLISHED.name, {}), measured.get(TUNED.name, {})
    if "samples_per_s" in published and "samples_per_s" in tuned:
        results["tuned_over_published"] = round(tuned["samples_per_s"] / published["samples_per_s"], 2)
        print(f"tuned / published: {results['tuned_over_published']}x on {device_name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
