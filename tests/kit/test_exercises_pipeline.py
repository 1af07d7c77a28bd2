"""The checks of notebook 05's exercises: the placeholder gets its hint, plausible mistakes get theirs,
the right answer passes, and a learner function that raises gets a hint instead of a traceback."""
import pytest
import torch

from tutorial_kit.exercises import PLACEHOLDER_HINT
from tutorial_kit.exercises import pipeline as exercises


def placeholder(*args):
    ...


def raises(*args):
    raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


def assert_hint(feedback, words: str):
    assert not feedback and words in feedback.message, feedback.message


def test_small_lora_model_has_a_non_zero_update_on_both_layers():
    model = exercises.small_lora_model()
    for name in ("q_proj", "v_proj"):
        layer = model.base_model.model.get_submodule(name)
        assert layer.lora_B["default"].weight.abs().max() > 0
        assert layer.scaling["default"] == exercises.ALPHA / exercises.RANK != 32 / 8
    second = exercises.small_lora_model(rank=exercises.SECOND_RANK)
    assert second.base_model.model.q_proj.scaling["default"] == exercises.ALPHA / exercises.SECOND_RANK == 1.5


# merge_by_hand --------------------------------------------------------------------------------------------------

def parts(layer):
    return layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight


def right_merge(layer):
    weight, down, up = parts(layer)
    return weight + layer.lora_alpha["default"] / layer.r["default"] * up @ down


def test_merge_placeholder_gets_the_placeholder_hint():
    assert_hint(exercises.check_merge_by_hand(...), PLACEHOLDER_HINT)
    assert_hint(exercises.check_merge_by_hand(placeholder), PLACEHOLDER_HINT)


def test_merge_mistakes_get_their_hints():
    def unscaled(layer):
        weight, down, up = parts(layer)
        return weight + up @ down

    def tutorial_scale(layer):
        weight, down, up = parts(layer)
        return weight + 4 * up @ down

    def inverted_scale(layer):
        weight, down, up = parts(layer)
        return weight + layer.r["default"] / layer.lora_alpha["default"] * up @ down

    def transposed(layer):
        weight, down, up = parts(layer)
        return (weight + 3 * up @ down).T

    def update_only(layer):
        weight, down, up = parts(layer)
        return 3 * up @ down

    def in_place(layer):
        weight, down, up = parts(layer)
        with torch.no_grad():
            return weight.add_(3 * up @ down)

    assert_hint(exercises.check_merge_by_hand(unscaled), "left out the scale")
    assert_hint(exercises.check_merge_by_hand(tutorial_scale), "read r and alpha from this layer")
    assert_hint(exercises.check_merge_by_hand(inverted_scale), "not r / alpha")
    assert_hint(exercises.check_merge_by_hand(transposed), "shape (512, 128)")
    assert_hint(exercises.check_merge_by_hand(update_only), "add it to the base weight")
    assert_hint(exercises.check_merge_by_hand(lambda layer: parts(layer)[0]), "base weight alone")
    assert_hint(exercises.check_merge_by_hand(in_place), "changed the layer's own weights")
    assert_hint(exercises.check_merge_by_hand(lambda layer: 1.0), "return a torch tensor")


def peft_delta(layer):
    return layer.base_layer.weight + layer.get_delta_weight("default")


def peft_merge_on_a_copy(layer):
    import copy

    twin = copy.deepcopy(layer)
    twin.merge()
    return twin.base_layer.weight


def peft_merge_and_unmerge(layer):
    layer.merge()
    weight = layer.base_layer.weight.clone()
    layer.unmerge()
    return weight


@pytest.mark.parametrize("mistake, call", [
    (peft_delta, "layer.get_delta_weight()"),
    (peft_merge_on_a_copy, "layer.merge()"),
    (peft_merge_and_unmerge, "layer.merge()"),
])
def test_merge_with_peft_doing_it_gets_a_hint_naming_the_call(mistake, call):
    feedback = exercises.check_merge_by_hand(mistake)
    assert_hint(feedback, call)
    assert "`+=`" not in feedback.message


def test_merge_check_leaves_peft_as_it_was():
    from peft.tuners.lora import Linear

    names = ("merge", "unmerge", "get_delta_weight")
    methods = [getattr(Linear, name) for name in names]
    exercises.check_merge_by_hand(peft_merge_on_a_copy)
    exercises.check_merge_by_hand(raises)
    assert [getattr(Linear, name) for name in names] == methods


def test_merge_a_scale_right_only_for_r4_alpha12_gets_a_hint():
    """The exercise text states r=4 and alpha=12; the second model (r=8, alpha=12) has a scale of 1.5."""
    def copied_scale(layer):
        weight, down, up = parts(layer)
        return weight + 3 * up @ down

    def floor_divided(layer):  # 12 // 4 is 3, right; 12 // 8 is 1
        weight, down, up = parts(layer)
        return weight + (layer.lora_alpha["default"] // layer.r["default"]) * up @ down

    def floor_divided_upside_down(layer):  # 4 // 12 is 0
        weight, down, up = parts(layer)
        return weight + (layer.r["default"] // layer.lora_alpha["default"]) * up @ down

    def truncated(layer):  # int(12 / 8) is 1
        weight, down, up = parts(layer)
        return weight + int(layer.lora_alpha["default"] / layer.r["default"]) * up @ down

    feedback = exercises.check_merge_by_hand(copied_scale)
    assert_hint(feedback, "a constant scale of 3, copied from the first model (12 / 4): read r and lora_alpha from "
                          "the layer")
    assert "r=8" in feedback.message and "//" not in feedback.message
    feedback = exercises.check_merge_by_hand(floor_divided)
    assert_hint(feedback, "`//` is integer division: 12 // 8 is 1; use /")
    assert "left out the scale" not in feedback.message
    feedback = exercises.check_merge_by_hand(floor_divided_upside_down)
    assert_hint(feedback, "`//` is integer division: 4 // 12 is 0; use /")
    assert "base weight alone" not in feedback.message
    feedback = exercises.check_merge_by_hand(truncated)
    assert_hint(feedback, "12 / 8 is not a whole number")
    assert "//" not in feedback.message and "left out the scale" not in feedback.message


def test_merge_right_answer_passes_and_errors_become_hints():
    assert exercises.check_merge_by_hand(right_merge)

    def with_scaling(layer):
        weight, down, up = parts(layer)
        return weight + layer.scaling["default"] * up @ down

    assert exercises.check_merge_by_hand(with_scaling)
    assert_hint(exercises.check_merge_by_hand(raises), "RuntimeError")


def test_merge_with_the_factors_transposed_gets_a_hint():
    def transposed_factors(layer):  # A.T @ B.T is (in x out): W + it cannot broadcast on the non-square layer
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        return layer.base_layer.weight + layer.scaling["default"] * (a.T @ b.T)

    feedback = exercises.check_merge_by_hand(transposed_factors)
    assert_hint(feedback, "W + scale * B @ A")
    assert "x @ A.T @ B.T" in feedback.message and "check_merge_by_hand" not in feedback.message


# sizes_mb -------------------------------------------------------------------------------------------------------

def byte_count(parameters):
    return sum(p.numel() * p.element_size() for p in parameters)


def right_sizes(model):
    named = list(model.named_parameters())
    adapter = byte_count(p for name, p in named if "lora_" in name)
    merged = byte_count(p for name, p in named if "lora_" not in name)
    return adapter / 1e6, merged / 1e6


def test_sizes_placeholder_gets_the_placeholder_hint():
    assert_hint(exercises.check_sizes_mb(...), PLACEHOLDER_HINT)
    assert_hint(exercises.check_sizes_mb(placeholder), PLACEHOLDER_HINT)


def test_sizes_mistakes_get_their_hints():
    def mebibytes(model):
        adapter, merged = right_sizes(model)
        return adapter * 1e6 / 2**20, merged * 1e6 / 2**20

    def model_dtype_for_all(model):
        named = list(model.named_parameters())
        adapter = sum(p.numel() for name, p in named if "lora_" in name) * 2
        return adapter / 1e6, right_sizes(model)[1]

    def float32_for_all(model):
        named = list(model.named_parameters())
        merged = sum(p.numel() for name, p in named if "lora_" not in name) * 4
        return right_sizes(model)[0], merged / 1e6

    def lora_left_in(model):
        return right_sizes(model)[0], byte_count(model.parameters()) / 1e6

    def bits(model):
        return tuple(8 * size for size in right_sizes(model))

    assert_hint(exercises.check_sizes_mb(mebibytes), "MiB")
    assert_hint(exercises.check_sizes_mb(model_dtype_for_all), "float32 here")
    assert_hint(exercises.check_sizes_mb(float32_for_all), "bfloat16, 2 bytes")
    assert_hint(exercises.check_sizes_mb(lora_left_in), "only the base parameters")
    assert_hint(exercises.check_sizes_mb(bits), "bits")
    assert_hint(exercises.check_sizes_mb(lambda model: 3.0), "two numbers")


def test_sizes_more_mistakes_get_their_hints():
    def parameter_counts(model):
        named = list(model.named_parameters())
        return (sum(p.numel() for name, p in named if "lora_" in name) / 1e6,
                sum(p.numel() for name, p in named if "lora_" not in name) / 1e6)

    def rounded(model):
        adapter, merged = right_sizes(model)
        return round(adapter, 3), round(merged, 1)

    feedback = exercises.check_sizes_mb(parameter_counts)
    assert_hint(feedback, "counts parameters, not bytes")
    assert "element_size()" in feedback.message
    assert_hint(exercises.check_sizes_mb(rounded), "right method, rounded too far")


def saved_sizes(model, save_merged):
    """Both saved the way the tutorial saves (safetensors); the merged model with `save_merged(merged, path)`."""
    import copy
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        adapter = os.path.getsize(os.path.join(folder, "adapter_model.safetensors"))
        merged_file = os.path.join(folder, "merged")
        save_merged(copy.deepcopy(model).merge_and_unload(), merged_file)
        return adapter / 1e6, os.path.getsize(merged_file) / 1e6


def saved_files(model):
    from safetensors.torch import save_model

    return saved_sizes(model, save_model)


def saved_merged_file(model):
    from safetensors.torch import save_file

    return right_sizes(model)[0], saved_sizes(model, lambda merged, path: save_file(merged.state_dict(), path))[1]


def test_sizes_of_a_merged_file_in_another_format_gets_a_hint():
    def pickled(merged, path):
        torch.save(merged.state_dict(), path)

    feedback = exercises.check_sizes_mb(lambda model: saved_sizes(model, pickled))
    assert_hint(feedback, "counted from its parameters")
    assert "656,640 bytes" in feedback.message and "expected" not in feedback.message


def test_sizes_of_an_adapter_file_in_another_format_gets_a_hint():
    def pickled_adapter(model):
        import io

        from peft import get_peft_model_state_dict

        buffer = io.BytesIO()
        torch.save(get_peft_model_state_dict(model), buffer)
        return buffer.getbuffer().nbytes / 1e6, right_sizes(model)[1]

    assert_hint(exercises.check_sizes_mb(pickled_adapter), "as if measured on a file saved another way")


def test_sizes_that_merge_the_model_received_get_a_hint():  # merge_and_unload merges the model it is called on
    def measured_after_merging(model):
        adapter = byte_count(p for name, p in model.named_parameters() if "lora_" in name)
        return adapter / 1e6, byte_count(model.merge_and_unload().parameters()) / 1e6

    def merged_adapter_in_place(model):  # merge_adapter keeps the LoRA layers but changes the base weights
        sizes = right_sizes(model)
        model.merge_adapter()
        return sizes

    feedback = exercises.check_sizes_mb(measured_after_merging)
    assert_hint(feedback, "copy.deepcopy(peft_model).merge_and_unload()")
    assert "changes the model it is called on" in feedback.message
    feedback = exercises.check_sizes_mb(merged_adapter_in_place)
    assert_hint(feedback, "changed the weights of the model it received")
    assert "copy.deepcopy(peft_model)" in feedback.message


def test_sizes_from_a_merged_copy_pass():
    def measured_on_a_copy(model):
        import copy

        adapter = byte_count(p for name, p in model.named_parameters() if "lora_" in name)
        return adapter / 1e6, byte_count(copy.deepcopy(model).merge_and_unload().parameters()) / 1e6

    assert exercises.check_sizes_mb(measured_on_a_copy)


def test_sizes_right_answer_passes_and_errors_become_hints():
    assert exercises.check_sizes_mb(right_sizes)

    def saved_file(model):  # what save_pretrained writes, header included
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            adapter = os.path.getsize(os.path.join(folder, "adapter_model.safetensors"))
        return adapter / 1e6, right_sizes(model)[1]

    feedback = exercises.check_sizes_mb(saved_file)
    assert feedback and "header" in feedback.message, feedback.message
    for both_files in (saved_files, saved_merged_file):
        feedback = exercises.check_sizes_mb(both_files)
        assert feedback and "header" in feedback.message, feedback.message
    assert exercises.check_sizes_mb(lambda model: [round(x, 6) for x in right_sizes(model)])
    assert_hint(exercises.check_sizes_mb(raises), "RuntimeError")


@pytest.mark.parametrize("check", [exercises.check_merge_by_hand, exercises.check_sizes_mb])
def test_a_value_instead_of_a_function_gets_a_hint(check):
    assert_hint(check(torch.zeros(2)), "pass the function itself")


def test_sizes_merged_model_saved_with_save_pretrained_gets_a_hint():
    """The small model's base is a plain torch module: it has no save_pretrained."""
    def save_pretrained(merged, path):
        merged.save_pretrained(path)

    feedback = exercises.check_sizes_mb(lambda model: saved_sizes(model, save_pretrained))
    assert_hint(feedback, "safetensors.torch.save_file(model.state_dict(), path)")
    assert "Fix that first" not in feedback.message
