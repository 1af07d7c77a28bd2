"""Notebook 03 as one command: fine-tune Voxtral with LoRA and save the adapter.

    python -m tutorial_kit.train --profile tiny --output-dir notebooks/outputs/tiny
    python -m tutorial_kit.train --dataset my_clips --question-column prompt --answer-column label

The same helpers as the notebook, in the same order (`load_splits`, `load_model_and_processor`,
`freeze_audio_tower`, `add_lora`, `make_trainer`, `train`, `save_adapter`): for the same settings
it trains the same adapter. Run it again after it stopped and it carries on from its last
complete checkpoint; run it after it finished and it only saves the adapter again.

On several GPUs (or CPU processes), start it through a launcher and it trains with
DistributedDataParallel, one process per device, with the same effective batch:

    torchrun --nproc_per_node 2 -m tutorial_kit.train ...
    accelerate launch --multi_gpu --num_processes 2 -m tutorial_kit.train ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from helpers.profiles import ADAPTER_ENV, OUTPUTS_ENV, PROFILE_ENV, SEED, TRAIN_MINUTES_ENV
from tutorial_kit.own_data import test_size_from

FEATURE_ROUTES = {
    "tower": "the frozen audio tower's output computed once per row and stored by `datasets` (3.7 MiB per 30 s "
             "of audio at full size in float16, twice that in float32); every epoch and evaluation pass reuses it, "
             "the same update as running the tower every step: the fastest epochs",
    "cached": "log-mel features computed once before training and stored by `datasets` in float32 "
              "(1.5 MB per 30 s of audio); the tower runs in every step",
    "float16": "the same, stored in float16: half the disk (0.77 MB per 30 s), near-identical loss",
    "streaming": "nothing stored: features are computed from the audio while training, in DataLoader worker "
                 "processes (--workers); for datasets whose features do not fit on disk",
}

DESCRIPTION = """\
Fine-tune Voxtral with LoRA (notebook 03 as a command) and save the adapter in OUTPUT_DIR/adapter.
Checkpoints go to OUTPUT_DIR/checkpoints: run the same command again after an interruption and it
continues from the last complete one.

Your own data: a folder of audio files with a metadata.csv or metadata.jsonl, one row per clip,
with the audio file's path in a column file_name (datasets' audiofolder layout), the answer, and a
question (or a category) for it. Tell the command which column is which with --answer-column and
--question-column (or --category-column).
"""

EPILOG = f"""\
examples:
  python -m tutorial_kit.train --profile tiny --output-dir notebooks/outputs/tiny
  python -m tutorial_kit.train --dataset my_clips --question-column prompt --answer-column label
  torchrun --nproc_per_node 2 -m tutorial_kit.train --profile full
  accelerate launch --multi_gpu --num_processes 2 -m tutorial_kit.train --profile full

Notebooks 04 and 05 evaluate and serve the adapter: {ADAPTER_ENV}=OUTPUT_DIR/adapter.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive whole number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number from 0 up to (not including) 1")
    return value


def _test_size(text: str) -> float | int:
    try:
        return test_size_from(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tutorial_kit.train", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to train")
    what.add_argument("--profile", choices=("tiny", "full"), default=None,
                      help="full: the real Voxtral-Mini-3B on a GPU. tiny: a small random Voxtral and a spoken stand-in "
                           "dataset that run on a CPU in a minute (they show the mechanics, not real results). "
                           f"Default: ${PROFILE_ENV}, else full on a CUDA GPU and tiny elsewhere.")
    what.add_argument("--output-dir", type=Path, default=None,
                      help="Where the run goes: the adapter in OUTPUT_DIR/adapter, checkpoints in OUTPUT_DIR/checkpoints, "
                           f"a summary in OUTPUT_DIR/training_run.json. Default: outputs/<profile> (or ${OUTPUTS_ENV}/"
                           "<profile>), where notebooks 04 and 05 look for the adapter.")
    how = parser.add_argument_group("how long and how")
    how.add_argument("--max-steps", type=_positive_int, default=None,
                     help="Stop after this many optimizer steps (one step learns from one effective batch). "
                          "Default: train for the profile's epochs.")
    how.add_argument("--epochs", type=_positive_float, default=None,
                     help="How many times to go through the training rows (default: the profile's, 3 for full, 2 for "
                          "tiny). --max-steps wins when both are given.")
    how.add_argument("--seed", type=int, default=SEED,
                     help="Seed for the LoRA weights' starting values, the order of the training rows and LoRA "
                          f"dropout (default {SEED}, as in notebook 03). The test split does not depend on it.")
    how.add_argument("--lora-dropout", type=_probability, default=None,
                     help="Fraction of LoRA's inputs dropped at random while training, against over-fitting "
                          "(default 0.05, as in notebook 03; 0 turns it off).")
    how.add_argument("--micro-batch", type=_positive_int, default=None,
                     help="Rows per forward pass in each process. The effective batch (rows per optimizer step) stays "
                          "the profile's: gradient accumulation makes up the rest. Default: from the GPU's memory.")
    how.add_argument("--features", choices=tuple(FEATURE_ROUTES), default="tower",
                     help="; ".join(f"{name}: {text}" for name, text in FEATURE_ROUTES.items()) + ". Default: tower.")
    how.add_argument("--workers", type=int, default=None,
                     help="DataLoader worker processes that prepare batches (default: 2 with --features streaming, else 0).")
    data = parser.add_argument_group("which data")
    data.add_argument("--dataset", default=None,
                      help="A Hugging Face Hub dataset id or a local folder. Without column options it must have Big "
                           "Bench Audio's columns (audio, category, official_answer) and is split like it. With any "
                           "column option it is your own data: a folder in datasets' audiofolder layout, audio files "
                           "with a metadata.csv or metadata.jsonl whose file_name column gives each file's path "
                           "(or a Hub dataset with an audio column). Default: the profile's dataset.")
    data.add_argument("--metadata", type=Path, default=None,
                      help="The metadata file (metadata.csv or metadata.jsonl), given as a path instead of a folder; "
                           "the audio files' paths are relative to its folder.")
    data.add_argument("--audio-column", default=None,
                      help="A Hub dataset's audio column (default: the first of audio, file_name, file, path that "
                           "exists). A folder's metadata names its files in file_name, as datasets' audiofolder reads it.")
    which = data.add_mutually_exclusive_group()
    which.add_argument("--question-column", default=None,
                       help="Column with a text question or instruction about each clip, read by the model after the "
                            "audio (e.g. 'What language is spoken?').")
    which.add_argument("--category-column", default=None,
                       help="Column with each clip's category: Big Bench Audio's formal_fallacies, navigate, "
                            "object_counting or web_of_lies get their own instruction, other values a generic one. "
                            "With neither option every clip gets the generic instruction.")
    data.add_argument("--answer-column", default=None,
                      help="Column with the answer the model should learn to give "
                           "(default: the first of official_answer, answer, label that exists).")
    data.add_argument("--test-size", type=_test_size, default=None,
                      help="Your own data: rows held out for evaluation, a fraction (0.1, the default) or a count (20); "
                           f"0 trains on every row. They are drawn with a fixed seed ({SEED}): the same metadata always gives "
                           "the same test rows, listed in training_run.json.")
    return parser


def own_data_requested(options) -> bool:
    return any(getattr(options, name) is not None for name in
               ("audio_column", "question_column", "category_column", "answer_column", "metadata", "test_size"))


def check_options(parser: argparse.ArgumentParser, options) -> None:
    if own_data_requested(options) and options.dataset is None:
        parser.error("--audio-column, --question-column, --category-column, --answer-column, --metadata and "
                     "--test-size describe your own data: give its folder (or Hub id) with --dataset.")
    if options.workers is not None and options.workers < 0:
        parser.error(f"--workers {options.workers}: expected 0 or more.")


# -- several processes ---------------------------------------------------------------------

def world_size() -> int:
    """How many processes train together: the launcher's WORLD_SIZE, 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def split_among_processes(micro_batch: int, accumulation: int, processes: int) -> tuple[int, int, str | None]:
    """(micro-batch, accumulation steps per process, a line saying what changed or None) that keep the
    effective batch micro-batch x accumulation when `processes` share it.

    Where the accumulation steps do not divide among the processes, the micro-batch shrinks to the largest
    that does (never grows: it was sized to the GPU's memory). A `ValueError` only where no split exists:
    the effective batch is not a multiple of the number of processes."""
    if accumulation % processes == 0:
        return micro_batch, accumulation // processes, None
    effective = micro_batch * accumulation
    fits = [m for m in range(micro_batch, 0, -1) if effective % (m * processes) == 0]
    if not fits:
        dividing = ", ".join(str(n) for n in range(1, effective + 1) if effective % n == 0)
        raise ValueError(f"The effective batch of {effective} rows cannot be shared equally by {processes} processes: "
                         f"use a number of processes that divides {effective} ({dividing}).")
    smaller = fits[0]
    per_process = effective // (smaller * processes)
    return smaller, per_process, (f"{processes} processes share the effective batch of {effective} as micro-batch {smaller} x "
                                  f"{per_process} accumulation step{'s' if per_process > 1 else ''} each (the plan was "
                                  f"{micro_batch} x {accumulation} in one process).")


class InputError(Exception):
    """Options or data that cannot be trained on; the message says which and why."""


@contextmanager
def _input_checked():
    # Errors about the options and the data are the learner's to fix: one line, no traceback.
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise InputError(str(error)) from None


# -- the run -------------------------------------------------------------------------------

def _profile(options):
    from helpers.profiles import get_profile

    overrides = {}
    if options.max_steps is not None:
        overrides["max_train_steps"] = options.max_steps
    if options.epochs is not None:
        overrides["train_epochs"] = options.epochs
    if options.micro_batch is not None:
        overrides.update(per_device_batch_size=options.micro_batch, gradient_accumulation_steps=None)
    profile = get_profile(options.profile, **overrides)
    if options.dataset is not None and not own_data_requested(options):
        profile = replace(profile, dataset_id=str(options.dataset))
    return profile


def load_training_splits(options, profile):
    """(splits, how they were made): the profile's Big Bench Audio split, or your own data's."""
    if not own_data_requested(options):
        from helpers.data import load_splits

        splits = load_splits(profile)
        return splits, f"{profile.test_per_category} per category held out (seed {SEED}), as in notebook 03"
    from tutorial_kit.own_data import DEFAULT_TEST_FRACTION, Columns, hold_out_test_split, load_own_dataset

    columns = Columns(audio=options.audio_column, answer=options.answer_column,
                      question=options.question_column, category=options.category_column)
    dataset = load_own_dataset(options.dataset, columns, metadata=options.metadata)
    test_size = DEFAULT_TEST_FRACTION if options.test_size is None else options.test_size
    splits = hold_out_test_split(dataset, test_size)
    return splits, f"test size {test_size} drawn with seed {SEED}"


def prepare_features(splits, processor, route: str):
    """The splits as the Trainer reads them for the chosen feature route."""
    from helpers.collator import precompute_features

    if route in ("streaming", "tower"):  # the tower's output: make_trainer computes it, for the splits read twice or more
        return splits
    dtype = "float16" if route == "float16" else "float32"
    return {name: precompute_features(split, processor, dtype=dtype) if len(split) else split
            for name, split in splits.items()}


def run_header(profile, options) -> str:
    """The profile as the notebooks print it; for your own data, with its folder and without
    Big Bench Audio's split (the data line below says how it was split)."""
    text = profile.describe()
    if own_data_requested(options):
        text = text.replace(f"dataset: {profile.dataset_id}", f"dataset: {options.dataset} (your own)")
        text = text.replace(f"test split: {profile.test_per_category} per category; ", "")
    return text


def _print_once(state, *lines: str) -> None:
    if state.is_main_process:
        print(*lines, sep="\n", flush=True)


def run(options, callbacks=None) -> Path:
    """Train as `options` say (`build_parser().parse_args(...)`); returns the adapter folder."""
    import torch
    from accelerate import PartialState
    from transformers import set_seed

    from helpers.hardware import training_plan
    from helpers.loading import load_model_and_processor, save_adapter
    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from helpers.profiles import outputs_dir
    from helpers.training import make_trainer, trainer_splits, training_arguments
    from tutorial_kit.checkpoints import last_complete_checkpoint
    from tutorial_kit.resume import train

    processes = world_size()
    on_gpu = torch.cuda.is_available()
    if on_gpu and processes > 1:
        # One GPU per process: the loader puts the model on the current device.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # A CPU-only machine forms its process group with gloo, which Trainer only asks for with use_cpu.
    use_cpu = processes > 1 and not on_gpu
    state = PartialState(cpu=use_cpu)

    with _input_checked():
        profile = _profile(options)
        plan = training_plan(profile)
        micro_batch, accumulation, split_note = split_among_processes(plan.micro_batch, plan.accumulation, processes)
        if split_note:
            plan = replace(plan, micro_batch=micro_batch)
        if processes > 1 and profile.train_minutes:
            # Each process would read its own clock and stop after a different step, and the
            # others would wait for it forever.
            raise ValueError(f"A time budget (${TRAIN_MINUTES_ENV}) stops each process on its own clock; with "
                             f"{processes} processes they could stop at different steps. Unset it, or use --max-steps.")
    output_dir = Path(options.output_dir) if options.output_dir is not None else outputs_dir(profile)
    checkpoints, adapter_dir = output_dir / "checkpoints", output_dir / "adapter"
    _print_once(state, run_header(profile, options), f"output: {output_dir}", *([split_note] if split_note else []))

    # The main process loads first and writes the caches (dataset, features); the others read them.
    with state.main_process_first():
        with _input_checked():
            splits, split_rule = load_training_splits(options, profile)
        model, processor = load_model_and_processor(profile)
        with _input_checked():  # a clip that does not decode is named here, before training starts
            data = prepare_features(splits, processor, options.features)
    _print_once(state, f"data: {len(splits['train'])} training rows, {len(splits['test'])} test rows ({split_rule}); "
                f"features: {options.features}")

    set_seed(options.seed)  # the LoRA weights' starting values
    dropout = {} if options.lora_dropout is None else {"lora_dropout": options.lora_dropout}
    model = add_lora(freeze_audio_tower(model), lora_config(**dropout))

    workers = options.workers if options.workers is not None else (2 if options.features == "streaming" else 0)
    overrides = dict(seed=options.seed, data_seed=options.seed, per_device_train_batch_size=plan.micro_batch,
                     per_device_eval_batch_size=plan.micro_batch, gradient_accumulation_steps=accumulation,
                     dataloader_num_workers=workers)
    if processes > 1:
        # Only LoRA weights train, and every one of them is used in every step (the audio tower is
        # frozen, so DDP does not track it): no need to search the graph for unused ones each step.
        overrides.update(use_cpu=use_cpu, ddp_find_unused_parameters=False)
    eval_split = data["test"] if len(splits["test"]) else None
    if eval_split is None:
        overrides["eval_strategy"] = "no"
    tower_once = options.features == "tower"
    # The main process computes the frozen tower's output and writes it to the cache; the others read it.
    with state.main_process_first(), _input_checked():
        arguments = training_arguments(profile, checkpoints, **overrides)
        train_split, eval_split = trainer_splits(model, processor, arguments, data["train"], eval_split,
                                                 precompute=tower_once, cache_tower_output=tower_once)
    trainer = make_trainer(model, processor, profile, train_split, eval_split, output_dir=checkpoints,
                           callbacks=callbacks, precompute=False, cache_tower_output=tower_once, **overrides)
    from helpers.collator import TOWER_OUTPUT

    _print_once(state, "audio tower: once per row, before the first epoch (its output is stored and reused)"
                if TOWER_OUTPUT in trainer.train_dataset.column_names else "audio tower: in every step")
    _print_once(state, f"batch: effective {plan.micro_batch * accumulation * processes} = micro-batch {plan.micro_batch} x "
                f"accumulation {accumulation} x {processes} process{'es' if processes > 1 else ''} ({plan.reason})")

    with state.main_process_first():  # a checkpoint torn by a kill is set aside once, by the main process
        last_complete_checkpoint(checkpoints, not trainer.args.save_only_model)
    result = train(trainer)

    if state.is_main_process:
        save_adapter(model, processor, adapter_dir)
        summary = dict(
            options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
            profile=profile.name, model=profile.model_id,
            dataset=str(options.dataset or profile.dataset_id), split=split_rule,
            train_rows=len(splits["train"]), test_rows=len(splits["test"]),
            test_ids=[str(i) for i in splits["test"]["id"]] if "id" in splits["test"].column_names else None,
            features=options.features, seed=options.seed, processes=processes, micro_batch=plan.micro_batch,
            accumulation_per_process=accumulation, effective_batch=plan.micro_batch * accumulation * processes,
            steps=result.global_step, training_loss=result.training_loss, adapter=str(adapter_dir),
        )
        (output_dir / "training_run.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Adapter saved in '{adapter_dir}' after {result.global_step} steps (training loss "
              f"{result.training_loss:.4f}). Evaluate or serve it in notebooks 04 and 05 with "
              f"{ADAPTER_ENV}={adapter_dir}", flush=True)
    state.wait_for_everyone()
    return adapter_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    check_options(parser, options)
    try:
        run(options)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
