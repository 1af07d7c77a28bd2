"""Checks for the exercises of notebook 03 (train LoRA).

    from tutorial_kit.exercises import lora as exercises
    exercises.check_lora_forward(lora_forward)
"""
from __future__ import annotations

import contextlib
import functools
import math
import re
from unittest import mock

import torch

from tutorial_kit.exercises import PLACEHOLDER_HINT, correct, friendly, not_yet, plain_number, unanswered

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
# The module types peft's LoRA can adapt (peft.tuners.lora.layer.dispatch_default, with transformers' Conv1D);
# it refuses any other module that target_modules matches.
PEFT_ADAPTS = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
               torch.nn.MultiheadAttention)


def _skeleton(model):
    """The model's architecture on PyTorch's `meta` device: its module names and shapes, no memory."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.device("meta"):
        return type(base)(base.config)


@functools.cache
def _full_size_attention_projections() -> tuple[str, ...]:
    """The language model's attention projections in the full-size Voxtral (30 layers), built on the `meta` device:
    names only, no memory, in a tenth of a second."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        full = VoxtralForConditionalGeneration(VoxtralConfig())
    return tuple(name for name, module in full.named_modules() if isinstance(module, torch.nn.Linear)
                 and "language_model" in name and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS)


def _full_size_layers() -> int:
    from transformers import VoxtralConfig

    return VoxtralConfig().text_config.num_hidden_layers


class _TwoLayers(torch.nn.Module):
    """Two linear layers of different shapes, one with a bias, to adapt with peft."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(64, 48, bias=False)
        self.linear_1 = torch.nn.Linear(40, 64, bias=True)


def _adapted_layers(r: int, alpha: int):
    """peft LoRA layers with random (non-zero) A and B, in eval mode: dropout off, outputs deterministic."""
    from peft import LoraConfig

    from helpers.lora import add_lora

    torch.manual_seed(r)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.1, target_modules=["q_proj", "linear_1"],
                        init_lora_weights=False)
    adapted = add_lora(_TwoLayers(), config).eval()
    return [adapted.base_model.model.q_proj, adapted.base_model.model.linear_1]


ORDER_HINT = "x (rows x in) goes through A first (r x in, so x @ A.T), then B (out x r, so @ B.T)."


# What peft's own methods do for you: calling one shows nothing of how the output is computed.
PEFT_SHORTCUTS = {
    "merge": "`layer.merge()` has peft fold the update into the weight for you",
    "unmerge": "`layer.unmerge()` has peft take the update out of the weight for you",
    "get_delta_weight": "`layer.get_delta_weight()` has peft compute the update for you",
}


@contextlib.contextmanager
def recording_calls(layer, names, calls: list):
    """While inside, calling one of `names` on any layer of `layer`'s class (a copy too) appends its name to `calls`."""
    def recorded(name, method):
        def call(self, *args, **kwargs):
            calls.append(name)
            return method(self, *args, **kwargs)
        return call

    cls = type(layer)
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(cls, name, recorded(name, getattr(cls, name))))
        yield


class _Watched(int):
    """An int that notes each `//` it takes part in, as (left, right, result), in `divisions`."""

    def __new__(cls, value: int, divisions: list):
        number = super().__new__(cls, value)
        number.divisions = divisions
        return number

    def __copy__(self):  # a copy of the layer (copy.deepcopy) keeps noting
        return type(self)(int(self), self.divisions)

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce__(self):  # pickled, a plain int
        return int, (int(self),)

    # Anything but a plain division by a non-zero number is left to Python (NotImplemented), so that an error
    # is raised on the learner's own line, not here.
    def __floordiv__(self, other):
        if not isinstance(other, int | float) or not other:
            return NotImplemented
        other = int(other) if isinstance(other, _Watched) else other  # noted here, once
        result = int(self) // other
        self.divisions.append((int(self), other, result))
        return result

    def __rfloordiv__(self, other):
        if not isinstance(other, int | float) or not self:
            return NotImplemented
        result = other // int(self)
        self.divisions.append((other, int(self), result))
        return result


_Watched.__name__ = _Watched.__qualname__ = "int"  # what Python's own error messages call it, as for any r


@contextlib.contextmanager
def watching_floor_division(layer, divisions: list):
    """While inside, `layer.r[...]` and `layer.lora_alpha[...]` note in `divisions` each `//` they take part in."""
    kept = layer.r, layer.lora_alpha
    layer.r, layer.lora_alpha = ({name: _Watched(value, divisions) if type(value) is int else value
                                  for name, value in settings.items()} for settings in kept)
    try:
        yield
    finally:
        layer.r, layer.lora_alpha = kept


def floor_division_hint(divisions, matches) -> str | None:
    """The hint for a `//` on r or lora_alpha whose whole-number result `matches(scale)` shows in the answer."""
    for left, right, result in divisions:
        if isinstance(right, int) and right and left / right != result and matches(result):
            return f"`//` is integer division: {left} // {right} is {result}; use /."
    return None


def rounded_scale_hint(alpha, rank, matches) -> str | None:
    """The hint for a scale lora_alpha / r made a whole number (int(), round()) whose result `matches(scale)` shows."""
    if alpha % rank and (matches(alpha // rank) or matches(round(alpha / rank))):
        return f"{alpha} / {rank} is not a whole number: keep the scale as it is, without int() or round()."
    return None


def weights_snapshot(layer) -> list:
    """What `changed_since` compares with: each parameter's values and write count."""
    return [(p.detach().clone(), p._version) for p in layer.parameters()]


def changed_since(snapshot, layer) -> bool:
    """Whether a parameter of `layer` was written to since `snapshot`, even if put back as it was."""
    return any(p._version != version or not torch.equal(p, before)
               for (before, version), p in zip(snapshot, layer.parameters()))


def _lora_output(layer, x, scale):
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + scale * (x @ a.T @ b.T)


@friendly
def check_lora_forward(lora_forward) -> object:
    """`lora_forward(layer, x)` -> what peft's LoRA layer outputs for `x` (in eval mode), from its weights."""
    if unanswered(lora_forward):
        return not_yet(PLACEHOLDER_HINT)
    if not callable(lora_forward):
        return not_yet("pass the function itself, `lora_forward`, without calling it.")
    for r, alpha in ((4, 16), (8, 4)):
        for layer in _adapted_layers(r, alpha):
            x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                expected = layer(x)
                called_whole_layer, shortcuts, divisions = [], [], []
                forward = layer.forward
                # an instance attribute: `layer(x)` and `layer.forward(x)` both go through it
                layer.forward = lambda *args, **kwargs: called_whole_layer.append(True) or forward(*args, **kwargs)
                snapshot = weights_snapshot(layer)
                try:
                    with recording_calls(layer, PEFT_SHORTCUTS, shortcuts), watching_floor_division(layer, divisions):
                        got = lora_forward(layer, x)
                except RuntimeError as error:
                    if "cannot be multiplied" not in str(error):
                        raise
                    return not_yet(f"{error}. {ORDER_HINT}")
                finally:
                    del layer.forward
                if shortcuts:
                    return not_yet(f"{PEFT_SHORTCUTS[shortcuts[0]]}, so it shows nothing of how the output is "
                                   "computed: build it from the parts, layer.base_layer(x) plus lora_alpha / r times "
                                   "x through lora_A, then lora_B.")
                if changed_since(snapshot, layer):
                    return not_yet("your function changed the layer's own weights; compute the output from them and "
                                   "leave the layer as it was (`+` makes a new tensor, `+=` or `.add_` overwrite).")
                if called_whole_layer:
                    return not_yet("that asks the LoRA layer itself for its output, so it shows nothing of how it is "
                                   "computed: build it from the parts, layer.base_layer(x) plus lora_alpha / r times "
                                   "x through lora_A, then lora_B.")
                if got is None:
                    return not_yet(PLACEHOLDER_HINT)
                if not isinstance(got, torch.Tensor):
                    return not_yet(f"return a tensor (the layer's output); you returned {type(got).__name__}.")
                if got.shape != expected.shape:
                    return not_yet(f"your output has shape {tuple(got.shape)}, the layer's {tuple(expected.shape)}: {ORDER_HINT}")
                if torch.allclose(got, expected, atol=1e-5):
                    continue
                where = f"with r={r}, lora_alpha={alpha} (a {layer.out_features} x {layer.in_features} layer):"
                if alpha / r != 32 / 8 and torch.allclose(got, _lora_output(layer, x, 32 / 8), atol=1e-5):
                    return not_yet(f"{where} you scaled by 4, the tutorial's 32 / 8 copied. Compute lora_alpha / r "
                                   "from the layer: layer.lora_alpha['default'] / layer.r['default'] "
                                   f"(here {alpha} / {r} = {alpha / r:g}).")
                floor_divided = floor_division_hint(
                    divisions, lambda scale: torch.allclose(got, _lora_output(layer, x, scale), atol=1e-5))
                if floor_divided:
                    return not_yet(f"{where} {floor_divided}")
                made_whole = rounded_scale_hint(
                    alpha, r, lambda scale: torch.allclose(got, _lora_output(layer, x, scale), atol=1e-5))
                if made_whole:
                    return not_yet(f"{where} {made_whole}")
                mistakes = {
                    1.0: "you left out the scale: the update B·A·x is multiplied by lora_alpha / r.",
                    alpha: "you scaled by lora_alpha alone: divide it by r (lora_alpha / r).",
                    r / alpha: "the scale is upside down: lora_alpha / r, not r / lora_alpha.",
                    alpha / math.sqrt(r): "lora_alpha / sqrt(r) is rsLoRA's scale (use_rslora=True); here it is lora_alpha / r.",
                    0.0: "that is the frozen layer alone: add the scaled LoRA update (lora_alpha / r) · B·A·x.",
                }
                for scale, hint in mistakes.items():
                    if torch.allclose(got, _lora_output(layer, x, scale), atol=1e-5):
                        return not_yet(f"{where} {hint}")
                bias = layer.base_layer.bias
                if bias is not None and torch.allclose(got + bias, expected, atol=1e-5):
                    return not_yet(f"{where} the bias is missing: base_layer(x) includes the bias, x @ W.T does not. "
                                   "Use layer.base_layer(x) (or add layer.base_layer.bias).")
                if torch.allclose(got, expected - layer.base_layer(x), atol=1e-5):
                    return not_yet(f"{where} that is the update alone: add the frozen layer's own output W·x (+ bias).")
                return not_yet(f"{where} your output differs from peft's by up to {(got - expected).abs().max():.3g}. "
                               "It is base_layer(x) + lora_alpha / r · (x @ A.T @ B.T).")
    return correct("the frozen layer's output plus lora_alpha / r times the low-rank update. The scale lets you "
                   "change r without retuning the learning rate as much, and since B starts at zero the adapted "
                   "model starts out exactly as the base model.")


@friendly
def check_attention_only_pattern(pattern, model=None) -> object:
    """`pattern`: a regular expression that peft's `target_modules` turns into LoRA on the language model's
    q/k/v/o attention projections, and on nothing else of `model`."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from transformers.pytorch_utils import Conv1D

    if unanswered(pattern):
        return not_yet(PLACEHOLDER_HINT)
    if not isinstance(pattern, str):
        return not_yet(f"give one regular expression as a string, e.g. r\".*language_model...\"; you gave a "
                       f"{type(pattern).__name__}. (A list of bare names matches by suffix: it cannot tell the "
                       "language model from the audio tower.)")
    if model is None:
        return not_yet("pass the model too: `exercises.check_attention_only_pattern(pattern, model)`.")
    try:
        re.compile(pattern)
    except re.error as error:
        return not_yet(f"that is not a valid regular expression: {error}.")
    config = LoraConfig(target_modules=pattern)
    modules = list(_skeleton(model).named_modules())
    wanted = {name for name, module in modules if isinstance(module, torch.nn.Linear)
              and "language_model" in name and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS}
    # peft tries every module whose name matches, in this order, and stops at the first it cannot adapt
    matched = [(name, module) for name, module in modules if name and check_target_module_exists(config, name)]
    if not matched:
        return not_yet(f"it matches no layer. peft matches the whole module name (re.fullmatch), e.g. "
                       f"{sorted(wanted)[0]!r}: start the pattern with `.*`.")
    refused = [(name, module) for name, module in matched if not isinstance(module, (*PEFT_ADAPTS, Conv1D))]
    if refused:
        name, module = refused[0]
        holds = any(other.startswith(name + ".") for other in wanted)
        return not_yet(f"it also matches {name!r}{' itself' if holds else ''}, a {type(module).__name__}, which is "
                       "not a linear layer: peft refuses it. End the pattern with the projection names.")
    matched = {name for name, _ in matched}
    extra, missing = sorted(matched - wanted), sorted(wanted - matched)
    tower = [name for name in extra if "audio_tower" in name]
    if tower:
        return not_yet(f"it also adapts {len(tower)} layers of the frozen audio tower, e.g. {tower[0]!r}: "
                       "require `language_model` in the name.")
    mlp = [name for name in extra if ".mlp." in name]
    if mlp:
        return not_yet(f"it also adapts {len(mlp)} MLP layers, e.g. {mlp[0]!r}: list only q_proj, k_proj, v_proj "
                       "and o_proj.")
    if extra:
        if len(extra) == 1:
            return not_yet(f"it also adapts {extra[0]!r}, which is not an attention projection.")
        return not_yet(f"it also adapts {len(extra)} other layers, e.g. {extra[0]!r}.")
    if missing:
        return not_yet(f"it misses {len(missing)} of the {len(wanted)} attention projections, e.g. {missing[0]!r}.")
    # This model is small; the same pattern must also cover every layer of the full-size one.
    if any(not check_target_module_exists(config, name) for name in _full_size_attention_projections()):
        return not_yet(f"it names only some layers: the full-size model has {_full_size_layers()}; match every layer "
                       "number (\\d+), not only the ones this small model has.")
    return correct(f"{len(wanted)} attention projections, nothing in the audio tower or the MLP. The LoRA paper "
                   "(Hu et al., 2021) adapted attention only. Later work (Dettmers et al., 2023) found that adapting "
                   "every linear layer, as this tutorial does, comes closer to a full fine-tune.")


@functools.cache
def _trainer_steps_per_epoch(rows: int, micro_batch: int, accumulation: int) -> int:
    """How many optimizer steps transformers' Trainer makes in one epoch of `rows` rows."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=micro_batch,
                                 gradient_accumulation_steps=accumulation, report_to="none", use_cpu=True)
        trainer = Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=[{"x": i} for i in range(rows)])
        return trainer.set_initial_training_values(args, trainer.get_train_dataloader())[1]


STEP_CASES = ((96, 8, 1), (900, 8, 2), (100, 4, 4), (45, 16, 1), (10, 4, 8))


@friendly
def check_optimizer_steps(optimizer_steps) -> object:
    """`optimizer_steps(rows, micro_batch, accumulation)` -> the optimizer steps of one epoch, as Trainer counts them."""
    if unanswered(optimizer_steps):
        return not_yet(PLACEHOLDER_HINT)
    if not callable(optimizer_steps):
        return not_yet("pass the function itself, `optimizer_steps`, without calling it.")
    for rows, micro_batch, accumulation in STEP_CASES:
        expected = _trainer_steps_per_epoch(rows, micro_batch, accumulation)
        got = plain_number(optimizer_steps(rows, micro_batch, accumulation))
        if got is None:
            return not_yet(PLACEHOLDER_HINT)
        if got == expected:
            continue
        where = (f"{rows} rows in micro-batches of {micro_batch}, {accumulation} per step: you return {got!r}, "
                 f"Trainer makes {expected}.")
        if got in (rows // (micro_batch * accumulation) + 1, (rows // micro_batch) // accumulation + 1):
            return not_yet(f"{where} That is one step too many: {rows} rows divide evenly into steps of "
                           f"{micro_batch * accumulation}, so no smaller last step is left over. Rounding down and "
                           "adding one adds a step whenever they divide; round up instead (math.ceil).")
        if expected and got % expected == 0 and 2 <= got // expected <= 10 and not isinstance(got, bool):
            return not_yet(f"{where} That is {got // expected} epochs' worth: count the steps of one epoch "
                           "(the table in the notebook shows the total over all epochs).")
        if got == rows // (micro_batch * accumulation) or got == (rows // micro_batch) // accumulation:
            return not_yet(f"{where} The last, smaller batch still makes a step: round up, not down.")
        if accumulation > 1 and got in (math.ceil(rows / micro_batch), rows / micro_batch, rows // micro_batch):
            return not_yet(f"{where} That counts micro-batches; one optimizer step uses {accumulation} of them.")
        if isinstance(got, float):
            return not_yet(f"{where} A step count is a whole number: round up.")
        return not_yet(where + " Count the micro-batches (the last may be smaller), then group them by the accumulation.")
    return correct("ceil(rows / micro-batch) micro-batches, grouped by the accumulation, the last group possibly "
                   "smaller. With several GPUs each takes its own micro-batches, so the effective batch is micro-batch "
                   "x accumulation x processes. The step count sets the warm-up length and how often the run "
                   "evaluates and saves.")
