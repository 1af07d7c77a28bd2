"""The checks of notebook 03's exercises: the placeholder gets its hint, plausible mistakes get theirs,
the right answer (computed here independently) passes, and a learner's function that raises gets a hint."""
import math
import re

import pytest

from tutorial_kit.exercises import PLACEHOLDER_HINT
from tutorial_kit.exercises import lora as exercises


@pytest.fixture(scope="module")
def model(model_and_processor):
    return model_and_processor[0]


def placeholder_function(*args):
    ...


def raises(*args):
    raise KeyError("lora_A")


def assert_not_yet(feedback, hint):
    assert not feedback.correct and feedback.message.startswith("Not yet"), feedback.message
    assert hint in feedback.message, feedback.message


# -- the output of a LoRA layer -----------------------------------------------------------------

def right_forward(layer, x):
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    scale = layer.lora_alpha["default"] / layer.r["default"]
    return x @ layer.base_layer.weight.T + (0 if layer.base_layer.bias is None else layer.base_layer.bias) \
        + scale * (x @ a.T) @ b.T


def unscaled(layer, x):
    return layer.base_layer(x) + layer.lora_B["default"](layer.lora_A["default"](x))


def scaled_by_alpha(layer, x):
    return layer.base_layer(x) + layer.lora_alpha["default"] * layer.lora_B["default"](layer.lora_A["default"](x))


def upside_down(layer, x):
    scale = layer.r["default"] / layer.lora_alpha["default"]
    return layer.base_layer(x) + scale * layer.lora_B["default"](layer.lora_A["default"](x))


def update_only(layer, x):
    return right_forward(layer, x) - layer.base_layer(x)


def wrong_order(layer, x):
    return layer.base_layer(x) + x @ layer.lora_B["default"].weight.T @ layer.lora_A["default"].weight.T


def test_lora_forward_placeholder():
    assert_not_yet(exercises.check_lora_forward(...), PLACEHOLDER_HINT)
    assert_not_yet(exercises.check_lora_forward(placeholder_function), PLACEHOLDER_HINT)


@pytest.mark.parametrize("mistake, hint", [
    (unscaled, "you left out the scale"),
    (scaled_by_alpha, "divide it by r"),
    (upside_down, "upside down"),
    (update_only, "the update alone"),
    (lambda layer, x: layer.base_layer(x), "the frozen layer alone"),
    (wrong_order, "goes through A first"),
    (lambda layer, x: 0.0, "return a tensor"),
    (lambda layer, x: layer(x), "asks the LoRA layer itself for its output"),
    (lambda layer, x: layer.forward(x), "asks the LoRA layer itself for its output"),
    (lambda layer, x: layer.base_layer(x) + (layer(x) - layer.base_layer(x)), "asks the LoRA layer itself"),
])
def test_lora_forward_mistakes(mistake, hint):
    assert_not_yet(exercises.check_lora_forward(mistake), hint)


def tutorial_scale(layer, x):  # the notebook's 32 / 8, right only where lora_alpha / r happens to be 4
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + 4 * (x @ a.T @ b.T)


def without_bias(layer, x):
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    scale = layer.lora_alpha["default"] / layer.r["default"]
    return x @ layer.base_layer.weight.T + scale * (x @ a.T @ b.T)


def test_lora_forward_copied_scale_is_named_as_the_tutorials():
    """A constant 4 passes r=4, lora_alpha=16; at r=8, lora_alpha=4 it equals lora_alpha, but the cause is the copy."""
    feedback = exercises.check_lora_forward(tutorial_scale)
    assert_not_yet(feedback, "32 / 8")
    assert "lora_alpha / r" in feedback.message and "alone" not in feedback.message


def merged_in_place(layer, x):
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    layer.base_layer.weight += layer.lora_alpha["default"] / layer.r["default"] * (b @ a)
    return layer.base_layer(x)


def merged_and_restored(layer, x):  # the weights end up as before, up to rounding: still overwritten
    update = layer.lora_alpha["default"] / layer.r["default"] * (layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
    layer.base_layer.weight += update
    out = layer.base_layer(x)
    layer.base_layer.weight -= update
    return out


def peft_merge(layer, x):
    layer.merge()
    out = layer.base_layer(x)
    layer.unmerge()
    return out


def peft_merge_on_a_copy(layer, x):
    import copy

    twin = copy.deepcopy(layer)
    twin.merge()
    return twin.base_layer(x)


def peft_delta(layer, x):
    import torch.nn.functional as F

    weight = layer.base_layer.weight + layer.get_delta_weight("default")
    return F.linear(x, weight, layer.base_layer.bias)


@pytest.mark.parametrize("mistake", [merged_in_place, merged_and_restored])
def test_lora_forward_that_changes_the_layer_gets_a_hint(mistake):
    feedback = exercises.check_lora_forward(mistake)
    assert_not_yet(feedback, "changed the layer's own weights")
    assert "`+=`" in feedback.message


@pytest.mark.parametrize("mistake, call", [
    (peft_merge, "layer.merge()"),
    (peft_merge_on_a_copy, "layer.merge()"),
    (peft_delta, "layer.get_delta_weight()"),
])
def test_lora_forward_that_lets_peft_compute_the_update_gets_a_hint(mistake, call):
    feedback = exercises.check_lora_forward(mistake)
    assert_not_yet(feedback, call)
    assert "changed the layer" not in feedback.message


def test_lora_forward_leaves_peft_as_it_was():
    from peft.tuners.lora import Linear

    methods = [getattr(Linear, name) for name in ("merge", "unmerge", "get_delta_weight", "forward")]
    exercises.check_lora_forward(peft_merge)
    exercises.check_lora_forward(raises)
    assert [getattr(Linear, name) for name in ("merge", "unmerge", "get_delta_weight", "forward")] == methods


def floor_divided(layer, x):  # right at r=4, lora_alpha=16 (16 // 4 is 4); 0 at r=8, lora_alpha=4
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + layer.lora_alpha["default"] // layer.r["default"] * (x @ a.T @ b.T)


def floor_divided_upside_down(layer, x):  # 4 // 16 is 0 at once
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + layer.r["default"] // layer.lora_alpha["default"] * (x @ a.T @ b.T)


@pytest.mark.parametrize("mistake, numbers", [(floor_divided, "4 // 8 is 0"), (floor_divided_upside_down, "4 // 16 is 0")])
def test_lora_forward_integer_division_is_named(mistake, numbers):
    feedback = exercises.check_lora_forward(mistake)
    assert_not_yet(feedback, "`//` is integer division")
    assert numbers in feedback.message and "use /" in feedback.message
    assert "frozen layer alone" not in feedback.message


def test_lora_forward_integer_division_elsewhere_is_not_blamed():
    """`//` on r or lora_alpha that does not make the output wrong is not named; the real mistake is."""
    def floor_divided_then_unscaled(layer, x):
        _ = layer.lora_alpha["default"] // layer.r["default"]
        return unscaled(layer, x)

    feedback = exercises.check_lora_forward(floor_divided_then_unscaled)
    assert_not_yet(feedback, "you left out the scale")
    assert "//" not in feedback.message


def test_lora_forward_error_in_a_division_is_the_learners_as_python_words_it():
    def divided_by_the_dict(layer, x):  # ["default"] forgotten
        return layer.base_layer(x) + layer.lora_alpha["default"] // layer.r

    feedback = exercises.check_lora_forward(divided_by_the_dict)
    assert_not_yet(feedback, "your code raised TypeError: unsupported operand type(s) for //: 'int' and 'dict'")
    assert "divided_by_the_dict" in feedback.message


def test_lora_forward_forgotten_bias():
    assert_not_yet(exercises.check_lora_forward(without_bias), "base_layer(x) includes the bias")


def test_lora_forward_right_answer_and_errors():
    assert exercises.check_lora_forward(right_forward).correct

    def with_the_adapter_names(layer, x):  # another plausible right answer: peft's active adapter, not "default"
        name = layer.active_adapters[0]
        update = layer.lora_B[name](layer.lora_A[name](x))
        return layer.base_layer(x) + layer.scaling[name] * update

    assert exercises.check_lora_forward(with_the_adapter_names).correct
    assert_not_yet(exercises.check_lora_forward(raises), "KeyError")


# -- a pattern for the attention projections only ------------------------------------------------

def test_attention_pattern_placeholder(model):
    assert_not_yet(exercises.check_attention_only_pattern(..., model), PLACEHOLDER_HINT)


@pytest.mark.parametrize("mistake, hint", [
    (r".*\.(q_proj|k_proj|v_proj|o_proj)", "audio tower"),
    (r".*language_model.*_proj", "MLP layers"),
    (r".*language_model.*\.(q_proj|k_proj|v_proj)", "misses 2 of the 8"),
    (r"language_model.*\.(q|k|v|o)_proj", "start the pattern with `.*`"),
    (r".*(language_model.*\.(q|k|v|o)_proj|linear_1)", "'model.multi_modal_projector.linear_1', which is not an"),
    (r".*language_model.*\.(q_proj", "not a valid regular expression"),
    (["q_proj", "k_proj", "v_proj", "o_proj"], "as a string"),
    (r".*language_model.*(embed_tokens|(q|k|v|o)_proj)", "'model.language_model.embed_tokens', which is not an"),
    (r".*\.(q_proj|k_proj|v_proj|o_proj|out_proj|embed_tokens)", "audio tower"),
])
def test_attention_pattern_mistakes(model, mistake, hint):
    assert_not_yet(exercises.check_attention_only_pattern(mistake, model), hint)


# Right on the tiny model (2 language-model layers), but the full-size model has 30.
FIRST_LAYERS_ONLY = [
    r".*language_model\.layers\.[01]\.self_attn\.(q|k|v|o)_proj",
    r"model\.language_model\.layers\.(0|1)\.self_attn\.(q|k|v|o)_proj",
    r".*language_model\.layers\.\d\.self_attn\.(q|k|v|o)_proj",  # one digit: layers 0 to 9
]


@pytest.mark.parametrize("pattern", FIRST_LAYERS_ONLY)
def test_attention_pattern_that_names_only_some_layers(model, pattern):
    assert model.config.text_config.num_hidden_layers < 10
    feedback = exercises.check_attention_only_pattern(pattern, model)
    assert_not_yet(feedback, "it names only some layers: the full-size model has 30; match every layer number")


def test_attention_pattern_full_size_names_are_quick(model):
    import time

    exercises._full_size_attention_projections.cache_clear()
    start = time.perf_counter()
    names = exercises._full_size_attention_projections()
    assert time.perf_counter() - start < 2
    assert len(names) == 4 * 30 and "model.language_model.layers.29.self_attn.o_proj" in names


NOT_LINEAR = [r".*language_model.*self_attn.*", r".*language_model.*\.self_attn(\..*)?"]
RIGHT_PATTERNS = [
    r".*language_model.*\.(q|k|v|o)_proj",
    r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",  # the solution's
    r"model\.language_model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj",
]


@pytest.mark.parametrize("pattern", NOT_LINEAR)
def test_attention_pattern_that_matches_a_module_peft_cannot_adapt(model, pattern):
    feedback = exercises.check_attention_only_pattern(pattern, model)
    assert_not_yet(feedback, "'model.language_model.layers.0.self_attn' itself")
    assert "not a linear layer: peft refuses it" in feedback.message


@pytest.mark.parametrize("pattern", RIGHT_PATTERNS)
def test_attention_pattern_right_answers_in_other_forms(model, pattern):
    assert exercises.check_attention_only_pattern(pattern, model).correct


def test_attention_pattern_check_agrees_with_peft(model):
    """What the check accepts, peft adapts (exactly the attention projections); what it refuses as not linear,
    peft refuses too."""
    import torch
    from peft import LoraConfig, get_peft_model

    def adapt(pattern):
        with torch.device("meta"):
            skeleton = type(model)(model.config)
        return get_peft_model(skeleton, LoraConfig(target_modules=pattern))

    wanted = {name for name, _ in model.named_modules()
              if "language_model" in name and re.search(r"self_attn\.[qkvo]_proj$", name)}
    for pattern in RIGHT_PATTERNS:
        assert set(adapt(pattern).base_model.targeted_module_names) == wanted
    for pattern in NOT_LINEAR:
        with pytest.raises(ValueError, match="is not supported"):
            adapt(pattern)


def test_attention_pattern_right_answer(model):
    names = [name for name, _ in model.named_modules()]
    wanted = [n for n in names if "language_model" in n and re.search(r"self_attn\.[qkvo]_proj$", n)]
    assert len(wanted) == 4 * model.config.text_config.num_hidden_layers
    right = r".*language_model\.layers\.\d+\.self_attn\.[qkvo]_proj"
    assert [n for n in names if re.fullmatch(right, n)] == wanted
    feedback = exercises.check_attention_only_pattern(right, model)
    assert feedback.correct and f"{len(wanted)} attention projections" in feedback.message


# -- optimizer steps per epoch -------------------------------------------------------------------

def test_optimizer_steps_placeholder():
    assert_not_yet(exercises.check_optimizer_steps(...), PLACEHOLDER_HINT)
    assert_not_yet(exercises.check_optimizer_steps(placeholder_function), PLACEHOLDER_HINT)


@pytest.mark.parametrize("mistake, hint", [
    (lambda rows, micro, accumulation: rows // (micro * accumulation), "round up, not down"),
    (lambda rows, micro, accumulation: math.ceil(rows / micro), "counts micro-batches"),
    (lambda rows, micro, accumulation: rows / micro, "counts micro-batches"),
    (lambda rows, micro, accumulation: rows // micro, "counts micro-batches"),
    (lambda rows, micro, accumulation: rows / (micro * accumulation), "whole number"),
    (lambda rows, micro, accumulation: rows // (micro * accumulation) + 1, "one step too many"),
    (lambda rows, micro, accumulation: 3 * -(-rows // (micro * accumulation)), "one epoch"),
    (lambda rows, micro, accumulation: 2 * -(-rows // (micro * accumulation)), "one epoch"),
])
def test_optimizer_steps_mistakes(mistake, hint):
    assert_not_yet(exercises.check_optimizer_steps(mistake), hint)


def test_optimizer_steps_right_answer_and_errors():
    assert exercises.check_optimizer_steps(lambda rows, micro, accumulation: -(-rows // (micro * accumulation))).correct
    # a whole number as a float is accepted, as in notebook 01's exercise 1
    as_float = exercises.check_optimizer_steps(lambda rows, micro, accumulation: float(math.ceil(rows / (micro * accumulation))))
    assert as_float.correct
    import torch

    def as_tensor(rows, micro, accumulation):
        return torch.tensor(rows / (micro * accumulation)).ceil()

    assert exercises.check_optimizer_steps(as_tensor).correct
    assert_not_yet(exercises.check_optimizer_steps(raises), "KeyError")


def int_scale(layer, x):  # right at r=4, lora_alpha=16; int(4 / 8) is 0 at r=8, lora_alpha=4
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + int(layer.lora_alpha["default"] / layer.r["default"]) * (x @ a.T @ b.T)


def rounded_scale(layer, x):  # round(0.5) is 0
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + round(layer.lora_alpha["default"] / layer.r["default"]) * (x @ a.T @ b.T)


@pytest.mark.parametrize("mistake", [int_scale, rounded_scale])
def test_lora_forward_scale_made_whole_is_named(mistake):
    feedback = exercises.check_lora_forward(mistake)
    assert_not_yet(feedback, "4 / 8 is not a whole number: keep the scale as it is, without int() or round()")
    assert "frozen layer alone" not in feedback.message
