"""One GPU check that fits a short loan: the T4 route, then bf16 at full size, in 8 minutes at most.

    python -m benchmarks.gpu_check              # on a GPU: results in benchmarks/results/gpu_check.json and .md
    python -m benchmarks.gpu_check --dry-run    # the same parts on the CPU at tiny size (CI, under a minute)
    python -m benchmarks.gpu_check --parts bf16_train_step --limit bf16_train_step=200

Random weights straight from `VoxtralConfig()` (`benchmarks.train_step.full_size_config`; the tiny
config in a dry run): nothing is downloaded. The parts run in `PARTS`' order, most valuable first, each
in a process of its own that is killed when it overruns its time limit (a killed process gives its GPU
memory back; the next part starts clean). The parent never touches CUDA. The JSON file is rewritten
(a temporary file, then a rename) before and after every part and every few seconds while one runs,
with the steps the running part has finished, so a run cut off still reports what it did.

A part is one entry in `PARTS`: a name, what it checks, its time limit on a GPU and in a dry run, and a
function that takes a `PartRun` and records its steps (`run.step`), its headline numbers and its checks.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_JSON = RESULTS / "gpu_check.json"
DRY_RUN_JSON = ROOT / ".cache" / "gpu_check_dry_run.json"  # a CPU rehearsal does not replace the GPU's results
BUDGET_S = {"gpu": 480.0, "dry": 360.0}  # the whole run: 8 minutes on a GPU
PARENT_RESERVE_S = 5.0  # kept back from the budget for starting processes and writing files
T4_MEMORY_GIB = 15  # a T4's 16 GB as torch sees it (the rehearsal's `--card t4`)
GIB = 2**30


# -- one part, run in its own process --------------------------------------------------------

class CheckFailed(AssertionError):
    """A check the part makes on what it measured (a tower quantized, a loss not finite, ...)."""


class PartRun:
    """What a part's function gets: where it runs, and `step` to record each finished step.

    Everything recorded is written at once (atomically) to the progress file the parent reads.
    """

    def __init__(self, name: str, progress: Path, dry_run: bool, workdir: Path):
        self.name, self.progress, self.dry_run, self.workdir = name, progress, dry_run, workdir
        self.device = "cpu" if dry_run else "cuda"
        self.data: dict = {"steps": {}, "headline": {}, "checks": {}, "check_details": {}, "substituted": []}

    def write(self) -> None:
        write_json_atomically(self.progress, self.data)

    def identify(self) -> None:
        """The card's name (and this process's id), recorded before anything else."""
        import torch

        if self.dry_run:
            card = f"CPU dry run, no GPU ({cpu_name()})"
            # One thread: a 2-core machine shared with other work runs the tiny model twice as fast so
            # (torch's threads wait on each other); the numbers of a dry run measure nothing anyway.
            torch.set_num_threads(1)
            self.data["cpu_threads"] = 1
        elif not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU here: `python -m benchmarks.gpu_check --dry-run` runs the same parts on the CPU")
        else:
            card = torch.cuda.get_device_name()
            properties = torch.cuda.get_device_properties(0)
            self.data.update(gpu_memory_gib=round(properties.total_memory / GIB, 1),
                             compute_capability=f"{properties.major}.{properties.minor}")
        self.data.update(card=card, torch=torch.__version__, pid=os.getpid())
        self.write()

    def versions(self) -> None:
        """The versions the numbers depend on."""
        import platform

        import transformers

        from benchmarks.train_step import software

        self.data.update(transformers=transformers.__version__, software={**software(), "python": platform.python_version()})
        self.write()

    def step(self, name: str, /, **values) -> dict:
        self.data["steps"][name] = {k: rounded(v) for k, v in values.items()}
        self.write()
        print(f"[{self.name}] {name}: {json.dumps(self.data['steps'][name], default=_plain)}", flush=True)
        return self.data["steps"][name]

    def skip(self, name: str, reason: str) -> None:
        self.step(name, status="skipped", reason=reason)

    def headline(self, **values) -> None:
        """The few numbers the Markdown table shows for this part."""
        self.data["headline"].update({k: rounded(v) for k, v in values.items()})
        self.write()

    def substitute(self, what: str) -> None:
        """Say what a dry run does instead of what the GPU run does."""
        if what not in self.data["substituted"]:
            self.data["substituted"].append(what)
            self.write()

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        """A check on what was measured; the part fails at its end if one did not pass."""
        self.data["checks"][name] = bool(passed)
        if detail:
            self.data["check_details"][name] = detail
        self.write()

    def failed_checks(self) -> list[str]:
        return [name for name, passed in self.data["checks"].items() if not passed]

    # -- measuring ------------------------------------------------------------------------
    def reset_peak(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def memory(self) -> dict:
        """Peak GPU memory since the last `reset_peak`, and what is held now (GiB); empty on a CPU."""
        import torch

        if self.device != "cuda":
            return {}
        torch.cuda.synchronize()
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
                "allocated_now_gib": torch.cuda.memory_allocated() / GIB}

    def synchronize(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def free(self) -> None:
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def rounded(value):
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _plain(value):
    """numpy and torch scalars as Python numbers; anything else JSON cannot hold, as text."""
    return value.item() if hasattr(value, "item") else str(value)


def write_json_atomically(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, default=_plain) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of one: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- what the parts share --------------------------------------------------------------------

def tiny_module():
    """The tiny profile's module: `tiny_config`, `build_processor` and the full-size token counts."""
    from tutorial_kit import tiny

    return tiny


def model_config(run: PartRun):
    """Voxtral-Mini-3B's architecture on a GPU; the tiny one (same architecture, 2 layers) in a dry run."""
    from benchmarks.train_step import full_size_config

    return tiny_module().tiny_config() if run.dry_run else full_size_config()


def bf16_on_a_gpu(run: PartRun, cpu_note: str = ""):
    """bfloat16 at full size on a GPU; in a dry run float32 at tiny size, both recorded as substitutions."""
    import torch

    if not run.dry_run:
        return torch.bfloat16
    run.substitute("float32 instead of bfloat16 (CPU)" + cpu_note)
    run.substitute("tiny config instead of VoxtralConfig() (random weights either way)")
    return torch.float32


def random_model(run: PartRun, dtype):
    """Random weights from the config, built on the part's device (no download)."""
    import torch
    from transformers import VoxtralForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(run.device):
        return VoxtralForConditionalGeneration(model_config(run)).to(dtype)


def random_processor(run: PartRun, folder: Path):
    """A real Voxtral processor with the real model's 131072 token ids (the tiny model's 2000 in a dry run)."""
    tiny = tiny_module()
    if run.dry_run:
        return tiny.build_processor(folder)
    return tiny.build_processor(folder, tiny.FULL_SIZE_SPECIAL_TOKENS, tiny.FULL_SIZE_TEXT_TOKENS)


ANSWERS = {"formal_fallacies": ("valid", "invalid"), "navigate": ("Yes", "No"),
           "object_counting": ("3", "7", "12"), "web_of_lies": ("No", "Yes")}


def synthetic_rows(count: int, seed: int, long_every: int = 0) -> list[dict]:
    """Rows shaped like Big Bench Audio's (16-kHz audio, category, answer), made here: a random model
    makes what the audio says irrelevant, and a GPU machine without registries has no dataset. Every
    `long_every`-th clip is 35 s, so its batch is padded to two 30-s chunks, as Big Bench Audio's longer
    clips make it."""
    import numpy as np

    from helpers.audio import SAMPLING_RATE
    from helpers.tasks import CATEGORIES

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)]
        seconds = 35.0 if long_every and i % long_every == long_every - 1 else float(rng.uniform(3, 12))
        t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
        audio = 0.1 * np.sin(2 * np.pi * rng.uniform(120, 400) * t) + 0.01 * rng.standard_normal(t.size)
        options = ANSWERS[category]
        rows.append({"id": f"gpu-check-{seed}-{i}", "audio": {"array": audio.astype(np.float32), "sampling_rate": SAMPLING_RATE},
                     "category": category, "official_answer": options[(i // len(CATEGORIES)) % len(options)]})
    return rows


def peak_tflops(card: str) -> float | None:
    from benchmarks.train_step import PEAK_TFLOPS

    return next((value for key, value in PEAK_TFLOPS.items() if key in card), None)


FLOPS_COUNTED = ("model FLOPs counted from the architecture, not measured: per training sample "
                 "(benchmarks.train_step.model_flops_per_sample) 2 per audio-tower weight per position "
                 "(forward only, frozen; 1500 positions per 30-s chunk) plus 4 per language-model weight "
                 "per token (forward, and backward for activations only: frozen weights; LoRA's own "
                 "negligible); per generated answer 2 per audio-tower weight per position plus 2 per "
                 "language-model weight per prompt token and per new token (max_new_tokens counted for "
                 "every row; the output head only once per new token, as generate keeps one position's "
                 "logits). Attention scores and checkpointing's recomputation are not counted. MFU = "
                 "those FLOPs per second / the card's dense bf16 peak (benchmarks.train_step.PEAK_TFLOPS: "
                 "H100 989 TFLOP/s)")


# -- (a) the T4 route as a learner gets it -----------------------------------------------------

# A dry run trains one step of 8 (4 x 2) instead of three of 16 (4 x 4): the same code, a fraction of the CPU time.
T4_SIZES = {"gpu": {"train_rows": 32, "eval_rows": 8, "steps": 3, "effective_batch": 16},
            "dry": {"train_rows": 8, "eval_rows": 4, "steps": 1, "effective_batch": 8}}


def quantization_report(model) -> dict:
    """Which Linear layers bitsandbytes quantized: by component, and the dtype of those kept out."""
    from helpers.hardware import MODULES_KEPT_OUT_OF_4BIT

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    quantized: dict[str, int] = {}
    kept: dict[str, str] = {}
    for name, module in base.named_modules():
        if type(module).__name__ == "Linear4bit":
            part = next((p for p in MODULES_KEPT_OUT_OF_4BIT if name == p or name.startswith(p + ".")), "language model")
            quantized[part] = quantized.get(part, 0) + 1
    for prefix in MODULES_KEPT_OUT_OF_4BIT:
        module = base.get_submodule(prefix)
        kept[prefix] = str(next(module.parameters()).dtype).removeprefix("torch.")
    return {"linear4bit_by_component": quantized, "kept_out_dtypes": kept}


def t4_route(run: PartRun) -> None:
    """Notebook 03's loading and training and notebook 05's merge, on a GPU held to a T4: fp16,
    `VOXTRAL_GPU_MEMORY_GIB=15` (so `load_model_and_processor` loads in 4 bits, with the audio tower,
    projector and output head kept out, and `training_plan` picks micro-batch 4 with checkpointing)."""
    from dataclasses import replace

    import torch

    from helpers.profiles import DTYPE_ENV, GPU_MEMORY_ENV, get_profile

    sizes = T4_SIZES["dry" if run.dry_run else "gpu"]
    os.environ[GPU_MEMORY_ENV] = str(T4_MEMORY_GIB)  # as tools/rehearsal.py's `--card t4`
    if run.dry_run:
        os.environ[DTYPE_ENV] = "float32"
        run.substitute("float32 instead of float16 (a CPU does not train in fp16)")
        run.substitute("tiny config instead of VoxtralConfig() (random weights either way)")
    else:
        os.environ[DTYPE_ENV] = "float16"

    # The weights a learner downloads, made here: random, in bf16 as the Hub's are, saved as a folder.
    started = time.perf_counter()
    model_dir = run.workdir / "model"
    processor = random_processor(run, model_dir)
    model = random_model(run, torch.float32 if run.dry_run else torch.bfloat16)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    run.free()
    run.step("build", seconds=time.perf_counter() - started, parameters=parameters,
             saved_gib=sum(f.stat().st_size for f in model_dir.iterdir()) / GIB, folder=str(run.workdir))

    profile = get_profile("full", model_id=str(model_dir), max_train_steps=sizes["steps"], logging_steps=1,
                          eval_steps=sizes["steps"], effective_batch_size=sizes["effective_batch"])
    if run.dry_run:
        run.substitute(f"{sizes['steps']} training step of {sizes['effective_batch']} rows instead of "
                       f"{T4_SIZES['gpu']['steps']} of {T4_SIZES['gpu']['effective_batch']}")
    run.reset_peak()
    peaks = []

    # Notebook 03: load_model_and_processor decides 4-bit from the (capped) GPU memory.
    from helpers.hardware import gpu_memory_gib, pick_dtype, training_plan, wants_4bit
    from helpers.loading import load_model_and_processor, model_dtype

    four_bit = wants_4bit(profile)
    if run.dry_run:
        import importlib.util

        installed = importlib.util.find_spec("bitsandbytes") is not None
        run.skip("load_4bit", "no CUDA GPU: bitsandbytes' 4-bit weights need one "
                              f"(bitsandbytes {'installed' if installed else 'not installed here'})")
        run.substitute("the model loads unquantized in float32 (load_model_and_processor's own choice without a GPU) "
                       "where the GPU run loads it in 4 bits")
    started = time.perf_counter()
    model, processor = load_model_and_processor(profile)
    run.synchronize()
    seconds = time.perf_counter() - started
    loaded = {"seconds": seconds, "four_bit": four_bit, "dtype": str(model_dtype(model)).removeprefix("torch."),
              "gpu_memory_gib_seen": gpu_memory_gib(), **run.memory()}
    if four_bit:
        report = quantization_report(model)
        loaded.update(report)
        kept_quantized = {k: v for k, v in report["linear4bit_by_component"].items() if k != "language model"}
        run.check("audio tower, projector and lm_head kept out of 4-bit", not kept_quantized,
                  f"Linear4bit layers where none belong: {kept_quantized}" if kept_quantized else "")
        run.check("language model in 4-bit", report["linear4bit_by_component"].get("language model", 0) > 0)
        run.check("kept-out modules in float16", set(report["kept_out_dtypes"].values()) == {"float16"},
                  str(report["kept_out_dtypes"]))
    elif not run.dry_run:
        run.check("4-bit chosen for a 15 GiB card", False, f"wants_4bit said no with {gpu_memory_gib():.1f} GiB")
    run.step("load_4bit" if four_bit else "load", **loaded)
    peaks.append(run.memory())
    run.headline(load=f"{seconds:.0f} s, " + (f"{loaded['allocated_now_gib']:.1f} GiB" if not run.dry_run else "float32"))

    # Notebook 03: LoRA on the language model, the tower frozen, the Trainer with the card's plan.
    from transformers import set_seed

    from helpers.lora import add_lora, freeze_audio_tower, lora_config, trainable_parameters
    from helpers.training import make_trainer
    from tutorial_kit.resume import train  # notebook 03's resumable train(trainer)

    set_seed(42)
    model = add_lora(freeze_audio_tower(model), lora_config())
    plan = training_plan(profile)
    from datasets import Dataset

    train_rows = synthetic_rows(sizes["train_rows"], seed=1, long_every=sizes["effective_batch"])
    eval_rows = synthetic_rows(sizes["eval_rows"], seed=2)
    run.reset_peak()
    started = time.perf_counter()
    trainer = make_trainer(model, processor, profile, Dataset.from_list(train_rows), Dataset.from_list(eval_rows),
                           output_dir=run.workdir / "run")
    tower_pass_s = time.perf_counter() - started  # make_trainer runs the frozen tower once per row
    started = time.perf_counter()
    result = train(trainer)
    run.synchronize()
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    args = trainer.args
    steps = trainer.state.global_step
    memory = run.memory()
    peaks.append(memory)
    run.step("train", plan={"micro_batch": plan.micro_batch, "accumulation": plan.accumulation,
                            "activation_checkpointing": plan.activation_checkpointing, "reason": plan.reason},
             ran_with={"micro_batch": args.per_device_train_batch_size, "accumulation": args.gradient_accumulation_steps,
                       "activation_checkpointing": bool(args.activation_checkpointing), "fp16": args.fp16, "bf16": args.bf16},
             steps=steps, rows=len(train_rows), clips_over_30_s=sum(len(r["audio"]["array"]) > 30 * 16000 for r in train_rows),
             tower_pass_seconds=tower_pass_s, seconds=seconds, seconds_per_step=seconds / max(1, steps),
             samples_per_s=result.metrics.get("train_samples_per_second"), losses=losses, eval_losses=eval_losses,
             trainable_parameters=trainable_parameters(model)[0], **memory)
    run.check("training losses finite", bool(losses) and all(math.isfinite(x) for x in losses + eval_losses), str(losses))
    run.check("trained the planned steps", steps == sizes["steps"], f"{steps} of {sizes['steps']}")
    run.headline(plan=f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps}"
                      + (", checkpointing" if args.activation_checkpointing else ""),
                 train=f"{seconds / max(1, steps):.1f} s/step"
                       + (f", peak {memory['peak_allocated_gib']:.1f} GiB" if memory else ""))
    from helpers.loading import save_adapter

    adapter_dir = save_adapter(model, processor, run.workdir / "adapter")

    # Notebook 04's evaluation (helpers.evaluate), on the model just trained.
    from helpers.evaluate import evaluate

    model.eval()
    run.reset_peak()
    started = time.perf_counter()
    evaluation = evaluate(model, processor, eval_rows, batch_size=profile.eval_batch_size,
                          max_new_tokens=profile.max_new_tokens, progress=False)
    run.synchronize()
    seconds = time.perf_counter() - started
    memory = run.memory()
    peaks.append(memory)
    run.step("evaluate", rows=len(eval_rows), seconds=seconds, samples_per_s=len(eval_rows) / seconds,
             batch_size=profile.eval_batch_size, max_new_tokens=profile.max_new_tokens, accuracy=evaluation.accuracy,
             examples=[p["prediction"] for p in evaluation.predictions[:2]], **memory)
    run.headline(evaluate=f"{len(eval_rows) / seconds:.2f} rows/s")
    del trainer, model, evaluation, result
    run.free()

    # Notebook 05: the adapter merged into half-precision weights (never 4-bit ones), saved, reloaded.
    from helpers.evaluate import generate_answers
    from helpers.lora import lora_module_names

    left_over = run.memory().get("allocated_now_gib")  # the 4-bit model should be gone: 0 GiB
    run.reset_peak()
    started = time.perf_counter()
    model, processor = load_model_and_processor(profile, adapter=adapter_dir, load_in_4bit=False)
    rows = eval_rows
    adapter_answers = generate_answers(model, processor, rows, max_new_tokens=profile.max_new_tokens)
    merged = model.merge_and_unload()
    merged_dir = run.workdir / "merged"
    merged.save_pretrained(merged_dir)
    processor.save_pretrained(merged_dir)
    merged_dtype = str(model_dtype(merged)).removeprefix("torch.")
    left_4bit = sum(type(m).__name__ == "Linear4bit" for m in merged.modules())
    left_lora = len(lora_module_names(merged))
    del model, merged
    run.free()
    served, served_processor = load_model_and_processor(replace(profile, model_id=str(merged_dir), load_in_4bit=False))
    merged_answers = generate_answers(served, served_processor, rows, max_new_tokens=profile.max_new_tokens)
    run.synchronize()
    seconds = time.perf_counter() - started
    memory = run.memory()
    peaks.append(memory)
    same = sum(a == b for a, b in zip(adapter_answers, merged_answers))
    expected = str(pick_dtype(profile)).removeprefix("torch.")
    run.step("merge", seconds=seconds, merged_dtype=merged_dtype, linear4bit_left=left_4bit, lora_modules_left=left_lora,
             saved_gib=sum(f.stat().st_size for f in merged_dir.iterdir()) / GIB,
             same_answers_as_adapter=f"{same} of {len(rows)}", allocated_before_gib=left_over, **memory)
    run.check("merged into unquantized weights (fp16 on a T4), not 4-bit", left_4bit == 0 and merged_dtype == expected,
              f"{merged_dtype} weights, {left_4bit} Linear4bit layers left")
    run.check("merged model has no LoRA modules", left_lora == 0)
    run.headline(merge=f"{seconds:.0f} s, {same}/{len(rows)} answers as the adapter's")
    del served
    run.free()

    if not run.dry_run:
        peak = max(p["peak_allocated_gib"] for p in peaks if p)
        reserved = max(p["peak_reserved_gib"] for p in peaks if p)
        run.step("peak", peak_allocated_gib=peak, peak_reserved_gib=reserved, cap_gib=T4_MEMORY_GIB,
                 note="after the random weights were built and saved; the cap makes larger allocations fail")
        run.check(f"peak within {T4_MEMORY_GIB} GiB", reserved <= T4_MEMORY_GIB + 0.01, f"{reserved:.2f} GiB reserved")
        run.headline(peak=f"{peak:.1f} GiB of {T4_MEMORY_GIB}")


# -- (b) bf16 at full size ---------------------------------------------------------------------

def bf16_train_step(run: PartRun) -> None:
    """`benchmarks.train_step`'s published variant (2 x 8, checkpointing) against the tuned one (16, no
    checkpointing, TF32), then the plan `training_plan` picks for this card, with MFU."""

    from benchmarks import train_step
    from helpers.hardware import training_plan
    from helpers.profiles import get_profile

    dtype = bf16_on_a_gpu(run, "; no MFU without a GPU's peak")
    steps, warmup = (1, 0) if run.dry_run else (2, 1)
    plan = training_plan(get_profile("full"))
    variants = {"published": train_step.PUBLISHED, "tuned": train_step.TUNED,
                "plan": train_step.Variant(f"this card's plan ({plan.micro_batch} x {plan.accumulation}"
                                           f"{', checkpointing' if plan.activation_checkpointing else ''}; {plan.reason})",
                                           plan.micro_batch, plan.activation_checkpointing, tf32=True)}
    card = run.data.get("card", "")
    measured = {}
    for key, variant in variants.items():
        started = time.perf_counter()
        try:
            result = train_step.run(variant, run.dry_run, run.device, dtype, steps, warmup)
        except RuntimeError as error:  # out of memory: the next variant still runs
            run.step(key, name=variant.name, error=first_line(error), seconds_with_build=time.perf_counter() - started)
            run.check(f"{key} variant ran", False, first_line(error))
            run.free()
            continue
        measured[key] = result
        run.step(key, **result, timed_steps=steps, warmup_steps=warmup, seconds_with_build=time.perf_counter() - started)
        run.headline(**{key: describe_training(result)})
        run.free()
        if key == "tuned" and "published" in measured:
            ratio = measured["tuned"]["samples_per_s"] / measured["published"]["samples_per_s"]
            run.step("tuned_over_published", ratio=ratio)
            run.headline(ratio=f"{ratio:.2f}x")
    run.step("flops", per_sample=train_step.model_flops_per_sample(model_config(run)), peak_tflops=peak_tflops(card),
             counted=FLOPS_COUNTED)


def describe_training(result: dict) -> str:
    text = f"{result['samples_per_s']:.1f} samples/s"
    if result.get("mfu") is not None:
        text += f", MFU {100 * result['mfu']:.0f}%"
    if result.get("peak_memory_gb") is not None:
        text += f", peak {result['peak_memory_gb']:.1f} GiB"
    return text


EVALUATION_SIZES = {"gpu": {"rows": 32, "max_new_tokens": 16}, "dry": {"rows": 8, "max_new_tokens": 4}}


def generation_flops(config, rows: list[tuple[int, int]], new_tokens: int) -> float:
    """Forward FLOPs per greedy answer, averaged over `rows` of (prompt tokens, 30-s chunks): see FLOPS_COUNTED."""
    from benchmarks.train_step import parameter_counts

    audio, head, text = parameter_counts(config)
    total = sum(2 * audio * 1500 * chunks + 2 * text * (prompt + new_tokens) + 2 * head * new_tokens for prompt, chunks in rows)
    return total / len(rows)


def bf16_evaluation(run: PartRun) -> None:
    """`benchmarks.evaluation_full_size.compare`: one row at a time (the published way) against
    `helpers.evaluate.evaluate` batched, greedy both, with MFU."""

    from benchmarks.evaluation_full_size import BATCH_SIZE, compare
    from helpers.audio import num_chunks
    from helpers.collator import VoxtralAudioCollator

    sizes = EVALUATION_SIZES["dry" if run.dry_run else "gpu"]
    dtype = bf16_on_a_gpu(run, "; no MFU without a GPU's peak")
    started = time.perf_counter()
    processor = random_processor(run, run.workdir / "processor")
    model = random_model(run, dtype).eval()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    run.synchronize()
    run.step("build", seconds=time.perf_counter() - started, dtype=str(dtype).removeprefix("torch."))
    rows = synthetic_rows(sizes["rows"], seed=3)
    run.reset_peak()
    compare(model, processor, rows[:2], run.device, 2)  # warm-up: kernels, caches, allocator
    result = compare(model, processor, rows, run.device, sizes["max_new_tokens"])
    memory = run.memory()

    collator = VoxtralAudioCollator(processor)
    per_row = [(len(collator.prompt_ids(r["category"], num_chunks(len(r["audio"]["array"])))),
                num_chunks(len(r["audio"]["array"]))) for r in rows]
    flops = generation_flops(model.config, per_row, sizes["max_new_tokens"])
    peak = peak_tflops(run.data.get("card", ""))
    mfu = {}
    for key in ("baseline", "ours"):
        achieved = flops * result[key] / 1e12
        mfu[key] = {"model_tflops": achieved, "mfu": achieved / peak if peak and not run.dry_run else None}
    run.step("compare", **result, batch_size=BATCH_SIZE, max_new_tokens=sizes["max_new_tokens"], flops_per_row=flops,
             peak_tflops=peak, one_at_a_time=mfu["baseline"], batched=mfu["ours"], counted=FLOPS_COUNTED, **memory,
             note="same_predictions: greedy answers equal between the two routes; bf16's batched and single-row "
                  "kernels round differently, so a random model's near-tied logits can flip (float32 agrees, tested)")
    batched = f"{result['ours']:.2f} rows/s"
    if mfu["ours"]["mfu"] is not None:
        batched += f", MFU {100 * mfu['ours']['mfu']:.1f}%"
    run.headline(one_at_a_time=f"{result['baseline']:.2f} rows/s", batched=f"{batched} (batch {BATCH_SIZE})",
                 ratio=f"{result['ratio']:.2f}x", same_predictions=f"{result['same_predictions']} of {result['rows']}")


TOWER_ONCE_SIZES = {"gpu": {"rows": 32, "steps": 3}, "dry": {"rows": 8, "steps": 2}}


def tower_once(run: PartRun) -> None:
    """bf16 at full size: training with the frozen audio tower run once per row (`helpers.frozen_tower`,
    the default) against the tower run in every step: the one pass, s/step and samples/s each, the
    losses side by side. The same LoRA start for both (restored between the routes)."""
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from helpers.hardware import training_plan
    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from helpers.profiles import get_profile
    from helpers.training import make_trainer

    sizes = TOWER_ONCE_SIZES["dry" if run.dry_run else "gpu"]
    dtype = bf16_on_a_gpu(run)
    started = time.perf_counter()
    processor = random_processor(run, run.workdir / "processor")
    set_seed(42)
    model = add_lora(freeze_audio_tower(random_model(run, dtype)), lora_config(lora_dropout=0.0))
    start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    run.synchronize()
    run.step("build", seconds=time.perf_counter() - started, dtype=str(dtype).removeprefix("torch."))
    profile = get_profile("full")
    plan = training_plan(profile)
    rows = Dataset.from_list(synthetic_rows(sizes["rows"], seed=4, long_every=8))
    measured = {}
    for route, cache in (("every_step", False), ("once", True)):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in start:
                    parameter.copy_(start[name])
        run.reset_peak()
        started = time.perf_counter()
        trainer = make_trainer(model, processor, profile, rows, output_dir=run.workdir / route, precompute=False,
                               cache_tower_output=cache, max_steps=sizes["steps"], per_device_train_batch_size=plan.micro_batch,
                               gradient_accumulation_steps=1, save_strategy="no", logging_steps=1, disable_tqdm=True)
        run.synchronize()
        prepared = time.perf_counter() - started
        started = time.perf_counter()
        result = trainer.train()
        run.synchronize()
        seconds = time.perf_counter() - started
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        measured[route] = run.step(route, preparing_seconds=prepared, train_seconds=seconds,
                                   seconds_per_step=seconds / max(1, trainer.state.global_step),
                                   samples_per_s=result.metrics.get("train_samples_per_second"), losses=losses,
                                   micro_batch=plan.micro_batch, **run.memory())
        del trainer
        run.free()
    before, after = measured["every_step"], measured["once"]
    difference = max(abs(a - b) for a, b in zip(before["losses"], after["losses"]))
    run.step("compare", largest_loss_difference=difference,
             step_speedup=before["seconds_per_step"] / after["seconds_per_step"])
    run.check("the same losses either way", difference <= 0.02 * max(before["losses"]) and len(before["losses"]) == len(
        after["losses"]), f"{before['losses']} / {after['losses']}")
    run.headline(every_step=f"{before['seconds_per_step']:.2f} s/step", once=f"{after['seconds_per_step']:.2f} s/step "
                 f"after a {after['preparing_seconds']:.1f}-s pass over {sizes['rows']} rows",
                 speedup=f"{before['seconds_per_step'] / after['seconds_per_step']:.2f}x per step")


# -- the parts, in order of value ---------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    name: str
    what: str
    limit_s: float  # on a GPU
    dry_limit_s: float  # in a dry run on a CPU
    run: Callable[[PartRun], None]


PARTS = (
    Part("t4_route", "the T4 route: fp16, 4-bit (tower, projector, lm_head kept out), 15 GiB; load, train with "
                     "the T4 plan, evaluate, merge into fp16 (notebook 05), peak GPU memory", 220, 120, t4_route),
    Part("bf16_train_step", "bf16 at full size: training step, published (2 x 8) against tuned (16 x 1) and this "
                            "card's plan, samples/s, peak memory, MFU", 110, 120, bf16_train_step),
    Part("bf16_evaluation", "bf16 at full size: evaluation one row at a time against batched, rows/s, MFU",
         80, 120, bf16_evaluation),
    Part("tower_once", "bf16 at full size: training with the frozen audio tower once per row against every step, "
                       "the one pass, s/step, losses", 60, 90, tower_once),
)
PARTS_BY_NAME = {part.name: part for part in PARTS}


def child_main(name: str, progress: Path, dry_run: bool, workdir: Path, stall: bool) -> int:
    """Run one part in this process (started by the parent), recording into `progress`."""
    run = PartRun(name, progress, dry_run, workdir)
    try:
        run.identify()
        if stall:  # for the tests: a part that overruns its limit
            run.step("stall", note="--stall: this part sleeps until it is stopped")
            while True:
                time.sleep(1)
        run.versions()
        PARTS_BY_NAME[name].run(run)
        failed = run.failed_checks()
        if failed:
            raise CheckFailed(f"check failed: {'; '.join(failed)}")
    except Exception as error:  # noqa: BLE001 - every failure is recorded, with its first line
        traceback.print_exc()
        run.data["error"] = first_line(error)
        run.write()
        return 1
    run.data["finished"] = True
    run.write()
    return 0


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# -- the parent: parts in order, each in a process with a time limit -------------------------------

def _die_with_parent() -> None:
    """In the child, before it runs: the kernel kills it when the parent dies (PR_SET_PDEATHSIG),
    so a parent cut off leaves no part running on the GPU."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Child:
    """A part's process: `exec` starts a fresh Python (`python -m benchmarks.gpu_check --child ...`);
    `fork` copies the parent, which has imported torch and transformers once (a CPU run's imports
    take longer than its parts). Either way it leads a process group of its own, killed as a whole."""

    def __init__(self, launch: str, command: list[str], environment: dict, child_args: tuple):
        self.returncode = None
        if launch == "exec":
            self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, errors="replace",
                                            start_new_session=True, preexec_fn=_die_with_parent)
            self.pid, self.output = self.process.pid, self.process.stdout
            return
        self.process = None
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the part: never returns
            code = 1
            try:
                os.close(read)
                os.setsid()
                _die_with_parent()
                os.dup2(write, 1)
                os.dup2(write, 2)
                os.close(write)
                os.environ.clear()
                os.environ.update(environment)
                code = child_main(*child_args)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        os.close(write)
        self.output = os.fdopen(read, "r", errors="replace")

    def poll(self):
        if self.process is not None:
            self.returncode = self.process.poll()
        elif self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the part's process group: its own children too
        except ProcessLookupError:
            pass
        while self.poll() is None:
            time.sleep(0.05)


def _pump(stream, log, echo: bool) -> None:
    for line in iter(stream.readline, ""):
        log.write(line)
        log.flush()
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
    stream.close()


def driver_opened() -> bool:
    """Whether this process has opened the NVIDIA driver (a CUDA or NVML call): a fork would then copy
    a driver state its child cannot use."""
    for fd in Path("/proc/self/fd").iterdir() if Path("/proc/self/fd").is_dir() else ():
        try:
            if os.readlink(fd).startswith("/dev/nvidia"):
                return True
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return False


def preload() -> list[str]:
    """Import what the parts import, once, before forking them (never CUDA: nothing here touches the GPU)."""
    import importlib

    failed = []
    for name in ("torch", "transformers", "peft", "datasets", "mistral_common", "helpers.loading", "helpers.training",
                 "helpers.evaluate", "helpers.published", "benchmarks.train_step", "benchmarks.evaluation_full_size"):
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - the part that needs it fails with the same error, recorded
            failed.append(f"{name}: {first_line(error)}")
    try:
        from transformers import Trainer, VoxtralForConditionalGeneration, VoxtralProcessor  # noqa: F401
        tiny_module()
    except Exception as error:  # noqa: BLE001
        failed.append(first_line(error))
    return failed


def run_part(part: Part, limit: float, record: dict, args, workdir: Path, write: Callable[[], None]) -> None:
    """Run `part` in a child process; fill `record` as it goes; kill the child past `limit` seconds."""
    progress = workdir / f"{part.name}.progress.json"
    part_dir = workdir / part.name
    part_dir.mkdir(parents=True, exist_ok=True)
    stall = part.name in args.stall
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--child", part.name, "--progress", str(progress),
               "--workdir", str(part_dir)] + (["--dry-run"] if args.dry_run else []) + (["--child-stall"] if stall else [])
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    environment.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub; a loaned GPU reaches none
    environment.setdefault("HF_DATASETS_OFFLINE", "1")
    log_path = Path(args.logs) / f"gpu_check_{part.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    record.update(status="running", limit_s=round(limit, 1), launch=args.launch)
    write()
    started = time.monotonic()
    with open(log_path, "w") as log:
        child = Child(args.launch, command, environment, (part.name, progress, args.dry_run, part_dir, stall))
        pump = threading.Thread(target=_pump, args=(child.output, log, not args.quiet), daemon=True)
        pump.start()
        timed_out, last_merge = False, 0.0
        try:
            while child.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > limit:
                    child.kill()
                    timed_out = True
                    break
                if elapsed - last_merge >= args.refresh_s:  # the steps finished so far, in case the run is cut off
                    last_merge = elapsed
                    merge_progress(record, progress)
                    record["wall_s"] = round(elapsed, 1)
                    write()
                time.sleep(0.1)
        except BaseException:
            child.kill()
            raise
        finally:
            pump.join(timeout=10)
    record["wall_s"] = round(time.monotonic() - started, 1)
    merge_progress(record, progress)
    record["log"] = str(log_path.relative_to(ROOT)) if log_path.is_relative_to(ROOT) else str(log_path)
    if timed_out:
        record.update(status="timed out", error=f"stopped after its limit of {limit:.0f} s")
    elif child.returncode == 0 and record.pop("finished", False):
        record["status"] = "ok"
    else:
        record["status"] = "failed"
        if "error" not in record:
            record["error"] = exit_description(child.returncode, log_path)
    record.pop("finished", None)
    shutil.rmtree(part_dir, ignore_errors=True)  # the saved models: gigabytes at full size


def merge_progress(record: dict, progress: Path) -> None:
    try:
        record.update(json.loads(progress.read_text()))
    except (OSError, ValueError):
        pass  # not written yet, or the child died while it wrote (the rename makes that unlikely)


def exit_description(code: int, log_path: Path) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}" + (" (out of host memory?)" if name == "SIGKILL" else "")
    else:
        reason = f"exit code {code}"
    try:
        last = [line for line in log_path.read_text().splitlines() if line.strip()][-1:]
    except OSError:
        last = []
    return f"{reason}" + (f"; last output: {last[0][:300]}" if last else "")


def markdown(report: dict) -> str:
    """The readable table beside the JSON."""
    card = next((r["card"] for r in report["parts"] if r.get("card")), "not recorded")
    software = next((r for r in report["parts"] if r.get("torch")), {})
    lines = [f"# GPU check{' (dry run on the CPU)' if report['dry_run'] else ''}", "",
             f"{report['date']}, {card}; torch {software.get('torch', '?')}, transformers {software.get('transformers', '?')}. "
             f"Budget {report['budget_s']:.0f} s, {report.get('wall_s', 0):.0f} s used"
             + ("" if report.get("finished") else " so far (the run has not finished, or was cut off)") + ".", "",
             "| part | status | wall s (limit) | numbers |", "|---|---|---|---|"]
    for record in report["parts"]:
        status = record["status"] + (f": {record['error']}" if record.get("error") else "")
        numbers = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in record.get("headline", {}).items())
        failed = [k for k, v in record.get("checks", {}).items() if v is False]
        if failed:
            numbers += ("; " if numbers else "") + "FAILED: " + ", ".join(failed)
        wall = (f"{record['wall_s']:.0f}" if "wall_s" in record else "-") + f" ({record['limit_s']:.0f})"
        lines.append(f"| {record['part']} | {status.replace('|', '/')} | {wall} | {numbers.replace('|', '/') or '-'} |")
    substituted = sorted({s for r in report["parts"] for s in r.get("substituted", [])})
    skipped = [f"{r['part']}.{name}: {step['reason']}" for r in report["parts"]
               for name, step in r.get("steps", {}).items() if step.get("status") == "skipped"]
    if substituted or skipped:
        lines += ["", "Substituted on the CPU:"] + [f"- {s}" for s in substituted] + [f"- skipped {s}" for s in skipped]
    lines += ["", f"FLOPs: {FLOPS_COUNTED}.", "", "Every step's numbers are in the JSON beside this file."]
    return "\n".join(lines) + "\n"


def parse_limits(values: list[str]) -> dict[str, float]:
    limits = {}
    for value in values:
        name, _, seconds = value.partition("=")
        if name not in PARTS_BY_NAME or not seconds:
            raise argparse.ArgumentTypeError(f"--limit {value!r}: expected PART=SECONDS with PART in {list(PARTS_BY_NAME)}")
        limits[name] = float(seconds)
    return limits


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same parts on the CPU at tiny size, float32")
    parser.add_argument("--json", type=Path, help=f"results (default {DEFAULT_JSON.relative_to(ROOT)}; "
                                                   f"dry run {DRY_RUN_JSON.relative_to(ROOT)}); the .md goes beside it")
    parser.add_argument("--parts", help="comma-separated, run in the order given "
                                        f"(default, in order of value: {','.join(PARTS_BY_NAME)})")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="another time limit for a part")
    parser.add_argument("--budget", type=float, help=f"seconds for the whole run (default {BUDGET_S['gpu']:.0f}; "
                                                     f"dry run {BUDGET_S['dry']:.0f}); a part gets no more than what is left")
    parser.add_argument("--logs", help="folder for each part's output (default: beside the JSON, in logs/)")
    parser.add_argument("--refresh-s", type=float, default=5.0, help="how often a running part's steps are written")
    parser.add_argument("--quiet", action="store_true", help="keep the parts' output in their logs only")
    parser.add_argument("--launch", choices=("exec", "fork"),
                        help="how each part's process starts: exec, a fresh Python (default on a GPU), or fork, a copy "
                             "of this process after importing torch and transformers once (default in a dry run)")
    parser.add_argument("--stall", default="", help="for tests: these parts (comma-separated) sleep past their limit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-stall", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.exit(child_main(args.child, args.progress, args.dry_run, args.workdir, args.child_stall))

    try:
        limits = parse_limits(args.limit)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    names = args.parts.split(",") if args.parts else list(PARTS_BY_NAME)
    unknown = [name for name in names if name not in PARTS_BY_NAME]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {list(PARTS_BY_NAME)}")
    args.stall = [name for name in args.stall.split(",") if name]
    path = args.json or (DRY_RUN_JSON if args.dry_run else DEFAULT_JSON)
    args.logs = args.logs or str(path.parent / "logs")
    budget = args.budget or BUDGET_S["dry" if args.dry_run else "gpu"]
    args.launch = args.launch or ("fork" if args.dry_run else "exec")

    def part_limit(part: Part) -> float:
        return limits.get(part.name, part.dry_limit_s if args.dry_run else part.limit_s)

    report = {"check": "benchmarks.gpu_check", "dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M"),
              "budget_s": budget, "wall_s": 0.0, "finished": False, "launch": args.launch,
              "parts": [{"part": name, "what": PARTS_BY_NAME[name].what, "status": "pending",
                         "limit_s": part_limit(PARTS_BY_NAME[name])} for name in names]}
    started = time.monotonic()

    def write() -> None:
        report["wall_s"] = round(time.monotonic() - started, 1)
        write_json_atomically(path, report)
        write_text_atomically(path.with_suffix(".md"), markdown(report))

    write()
    if args.launch == "fork":
        failed = preload()
        report["preload_s"] = round(time.monotonic() - started, 1)
        if failed:
            report["preload_failed"] = failed
        if driver_opened():  # an import touched the GPU: a forked part could not use it
            print("gpu_check: the imports opened the NVIDIA driver; starting each part as a fresh process instead")
            report["launch"] = args.launch = "exec"
        write()

    # Big enough for two full-size models in fp16 (about 19 GB): the page cache in memory, not the disk.
    in_memory = not args.dry_run and Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 40 * GIB
    base = "/dev/shm" if in_memory else None
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check.", dir=base))
    try:
        for record in report["parts"]:
            part = PARTS_BY_NAME[record["part"]]
            left = budget - (time.monotonic() - started) - PARENT_RESERVE_S
            limit = min(record["limit_s"], left)
            if limit < 10:
                record.update(status="not run", error=f"the run's budget of {budget:.0f} s is spent")
                write()
                continue
            print(f"== {part.name} (limit {limit:.0f} s): {part.what}", flush=True)
            run_part(part, limit, record, args, workdir, write)
            print(f"== {part.name}: {record['status']} in {record['wall_s']:.0f} s"
                  + (f" ({record['error']})" if record.get("error") else ""), flush=True)
            write()
        report["finished"] = True
    finally:
        write()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {path} and {path.with_suffix('.md')} ({report['wall_s']:.0f} s)")
    return report


def all_ok(report: dict) -> bool:
    return report["finished"] and all(record["status"] == "ok" for record in report["parts"])


if __name__ == "__main__":
    sys.exit(0 if all_ok(main()) else 1)
