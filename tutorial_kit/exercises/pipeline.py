"""Checks for the exercises of notebook 05 (merging and serving).

They work on `small_lora_model()`, two linear layers named like Voxtral's attention projections
with LoRA on both, so that no training run and no download is needed.

    from tutorial_kit.exercises import pipeline as exercises
    exercises.check_merge_by_hand(merge_by_hand)
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

from tutorial_kit.exercises import PLACEHOLDER_HINT, ROUNDED_HINT, correct, friendly, not_yet, rounded_too_far, unanswered
from tutorial_kit.exercises.lora import (
    changed_since,
    floor_division_hint,
    recording_calls,
    rounded_scale_hint,
    watching_floor_division,
    weights_snapshot,
)

RANK, ALPHA = 4, 12  # a scale alpha/r of 3, not the tutorial's 32/8 = 4, so that a copied constant shows
# The merge check also runs on a second model whose scale, 12 / 8 = 1.5, is not a whole number: a constant copied
# from the first model, or `//`, shows there.
SECOND_RANK = 8


def small_lora_model(dtype: torch.dtype = torch.float32, seed: int = 0, rank: int = RANK, alpha: int = ALPHA):
    """A PEFT model over two linear layers (`q_proj` 512->512, `v_proj` 512->128) with LoRA
    r=4, alpha=12 on both (or `rank`, `alpha`). `init_lora_weights=False` makes B random, as after training
    (a fresh adapter starts with B = 0, and merging it would change nothing)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    layers = OrderedDict(q_proj=torch.nn.Linear(512, 512), v_proj=torch.nn.Linear(512, 128))
    base = torch.nn.Sequential(layers).to(dtype)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, config)


def _peft_merged_weights(model, names) -> dict[str, torch.Tensor]:
    merged = copy.deepcopy(model).merge_and_unload()
    return {name: merged.get_submodule(name).weight.detach().float() for name in names}


def _lora_parts(layer):
    base = layer.base_layer.weight.detach().float()
    down = layer.lora_A["default"].weight.detach().float()
    up = layer.lora_B["default"].weight.detach().float()
    return base, down, up


# peft's own methods that do the merge, or part of it, for you
PEFT_SHORTCUTS = {
    "merge": "`layer.merge()` has peft do the merge for you",
    "unmerge": "`layer.unmerge()` has peft undo a merge for you",
    "get_delta_weight": "`layer.get_delta_weight()` has peft compute the update (alpha / r) * B @ A for you",
}


@friendly
def check_merge_by_hand(merge_by_hand) -> object:
    """`merge_by_hand(layer)` -> the merged weight W + (alpha / r) * B @ A of one LoRA layer."""
    if not callable(merge_by_hand):
        return not_yet("pass the function itself, `merge_by_hand`, without calling it.")
    for rank in (RANK, SECOND_RANK):
        feedback = _check_merge_on(merge_by_hand, small_lora_model(rank=rank), rank, ALPHA)
        if feedback is not None:
            return feedback
    return correct("equal to peft's merge_and_unload on both layers, at r=4 and at r=8. A merged layer is one "
                   "ordinary matrix: the same answers, with no extra work per token.")


def _check_merge_on(merge_by_hand, model, rank: int, alpha: int):
    """The hint for `merge_by_hand` on both layers of `model` (LoRA r=`rank`, alpha=`alpha`); None if right."""
    names = ("v_proj", "q_proj")  # the non-square one first: a transposed result shows in its shape
    merged_by_peft = _peft_merged_weights(model, names)
    where = "" if rank == RANK else f"on a second model, with r={rank} and alpha={alpha} (scale {alpha / rank:g}): "
    for name in names:
        layer = model.base_model.model.get_submodule(name)
        untouched = weights_snapshot(layer)
        shortcuts, divisions = [], []
        try:
            with recording_calls(layer, PEFT_SHORTCUTS, shortcuts), watching_floor_division(layer, divisions):
                result = merge_by_hand(layer)
        except RuntimeError as error:
            if "must match the size" not in str(error) and "cannot be multiplied" not in str(error):
                raise
            up, down = layer.lora_B["default"].weight, layer.lora_A["default"].weight
            return not_yet(f"{name}: your code raised RuntimeError: {error}. B is {tuple(up.shape)} and A is "
                           f"{tuple(down.shape)}: the merged weight is W + scale * B @ A, B first, which has W's shape "
                           "(A.T @ B.T is its transpose, the order of x @ A.T @ B.T on a batch of inputs).")
        if shortcuts:
            return not_yet(f"{PEFT_SHORTCUTS[shortcuts[0]]}: compute it yourself from what the layer holds, "
                           "W = layer.base_layer.weight, A = layer.lora_A['default'].weight, "
                           "B = layer.lora_B['default'].weight, r and lora_alpha.")
        if unanswered(result):
            return not_yet(PLACEHOLDER_HINT)
        if not isinstance(result, torch.Tensor):
            return not_yet(f"return a torch tensor (the merged weight); got {type(result).__name__}.")
        if changed_since(untouched, layer):
            return not_yet("your function changed the layer's own weights; compute a new tensor and leave the layer as "
                           "it was (`+` makes a new tensor, `+=` or `.add_` overwrite).")
        expected = merged_by_peft[name]
        base, down, up = _lora_parts(layer)
        if tuple(result.shape) != tuple(expected.shape):
            return not_yet(f"{name}: your weight has shape {tuple(result.shape)}, the layer's is {tuple(expected.shape)} "
                           f"(out_features, in_features). B is {tuple(up.shape)} and A is {tuple(down.shape)}: "
                           "B @ A has the weight's shape.")
        result = result.detach().float()
        if torch.allclose(result, expected, atol=1e-5):
            continue

        def scaled_by(scale) -> bool:
            return torch.allclose(result, base + scale * up @ down, atol=1e-5)

        floor_divided = floor_division_hint(divisions, scaled_by)
        if floor_divided:
            return not_yet(where + floor_divided)
        if rank != RANK and scaled_by(ALPHA / RANK):
            return not_yet(f"{where}you used a constant scale of {ALPHA / RANK:g}, copied from the first model "
                           f"({ALPHA} / {RANK}): read r and lora_alpha from the layer, `layer.r['default']` and "
                           "`layer.lora_alpha['default']` (or `layer.scaling['default']`).")
        made_whole = rounded_scale_hint(alpha, rank, scaled_by)
        if made_whole:
            return not_yet(where + made_whole)
        for scale, hint in ((1.0, "you left out the scale alpha / r: the update is (alpha / r) * B @ A."),
                            (rank / alpha, f"the scale is alpha / r (here {alpha} / {rank} = {alpha / rank:g}), "
                                           "not r / alpha."),
                            (float(alpha), "the scale is alpha / r, not alpha alone."),
                            (32 / 8, "you used the tutorial's 32 / 8; read r and alpha from this layer: "
                                     "`layer.r['default']` and `layer.lora_alpha['default']` (or `layer.scaling`)."),
                            (0.0, "that is the base weight alone: add the LoRA update (alpha / r) * B @ A.")):
            if scaled_by(scale):
                return not_yet(where + hint)
        if expected.shape[0] == expected.shape[1] and torch.allclose(result, expected.T, atol=1e-5):
            return not_yet(where + "your weight is transposed: a Linear weight is (out_features, in_features), and so "
                           "is B @ A.")
        if torch.allclose(result, (alpha / rank) * up @ down, atol=1e-5):
            return not_yet(where + "that is the update alone: add it to the base weight `layer.base_layer.weight`.")
        difference = (result - expected).abs().max().item()
        return not_yet(f"{where}{name}: your weight differs from peft's merge by up to {difference:.3g}. "
                       "Merged weight = W + (alpha / r) * B @ A, with W = layer.base_layer.weight, "
                       "A = layer.lora_A['default'].weight, B = layer.lora_B['default'].weight.")
    return None


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


MB = 10**6
FILE_OVERHEAD = 8192  # at most this many bytes more than the weights: a small model's file, its header or pickle


def _saved_adapter_bytes(model) -> int:
    """The size of the adapter_model.safetensors that save_pretrained writes: the tensors and a JSON header."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return os.path.getsize(os.path.join(folder, "adapter_model.safetensors"))


def _saved_merged_bytes(model) -> set[int]:
    """The sizes of the merged model saved as safetensors, as save_pretrained saves a transformers model: the tensors
    and a JSON header, without and with save_pretrained's metadata {"format": "pt"}."""
    import os
    import tempfile

    from safetensors.torch import save_file

    state = copy.deepcopy(model).merge_and_unload().state_dict()
    sizes = set()
    with tempfile.TemporaryDirectory() as folder:
        for metadata in (None, {"format": "pt"}):
            path = os.path.join(folder, "model.safetensors")
            save_file(state, path, metadata=metadata)
            sizes.add(os.path.getsize(path))
    return sizes


@friendly
def check_sizes_mb(sizes_mb) -> object:
    """`sizes_mb(peft_model)` -> (adapter_mb, merged_mb): the saved adapter's and the merged model's size in MB,
    each counted from its parameters or measured as the safetensors file it saves to."""
    from peft import get_peft_model_state_dict

    if not callable(sizes_mb):
        return not_yet("pass the function itself, `sizes_mb`, without calling it.")
    model = small_lora_model(torch.bfloat16)
    # everything expected is measured first: the learner's function may change the model it receives
    adapter_bytes = _bytes(get_peft_model_state_dict(model).values())
    merged_bytes = _bytes(copy.deepcopy(model).merge_and_unload().parameters())
    file_bytes, merged_file_sizes = _saved_adapter_bytes(model), _saved_merged_bytes(model)
    lora_count = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    base_count = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    all_bytes = _bytes(model.parameters())
    untouched = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        result = sizes_mb(model)
    except AttributeError as error:
        if "save_pretrained" not in str(error):
            raise
        return not_yet(f"{error}: the small model this check uses is a plain torch module, so once merged it has no "
                       "save_pretrained. Save its weights with `safetensors.torch.save_file(model.state_dict(), path)` "
                       "and measure that file, or count the bytes from its parameters.")
    if unanswered(result):
        return not_yet(PLACEHOLDER_HINT)
    if not any("lora_" in name for name, _ in model.named_parameters()):
        return not_yet("your function took the LoRA layers out of the model it received. `merge_and_unload` "
                       "changes the model it is called on, so copy first: "
                       "`copy.deepcopy(peft_model).merge_and_unload()`.")
    now = dict(model.named_parameters())
    if now.keys() != untouched.keys() or any(not torch.equal(p, now[name]) for name, p in untouched.items()):
        return not_yet("your function changed the weights of the model it received. Measure without changing it; "
                       "to merge, merge a copy: `copy.deepcopy(peft_model).merge_and_unload()`.")
    if not isinstance(result, tuple | list) or len(result) != 2:
        return not_yet(f"return two numbers (adapter_mb, merged_mb); got {result!r}.")
    adapter_mb, merged_mb = (float(x) for x in result)

    def near(value, expected):
        return abs(value - expected) <= 1e-6 * max(expected, 1)

    adapter_file = near(adapter_mb, file_bytes / MB)
    merged_file = next((size for size in merged_file_sizes if near(merged_mb, size / MB)), None)
    if (adapter_file or near(adapter_mb, adapter_bytes / MB)) and (merged_file or near(merged_mb, merged_bytes / MB)):
        notes = []
        if adapter_file:
            notes.append(f"{adapter_mb:.4f} MB is the file save_pretrained writes: the LoRA weights' {adapter_bytes:,} "
                         f"bytes plus a header of {file_bytes - adapter_bytes:,} bytes that names each tensor and its "
                         "shape.")
        if merged_file:
            notes.append(f"{merged_mb:.4f} MB is the merged model's safetensors file: its {merged_bytes:,} bytes of "
                         f"weights plus a header of {merged_file - merged_bytes:,} bytes.")
        if notes:
            return correct(" ".join(notes) + f" The merged model is {merged_bytes / adapter_bytes:.0f} times larger "
                           "than the adapter: share the adapter, merge only where you serve.")
        return correct(f"the adapter is {adapter_mb:.3f} MB, {adapter_bytes / merged_bytes:.1%} of the merged model's "
                       f"{merged_mb:.1f} MB: share the adapter, merge only where you serve.")
    if near(adapter_mb, lora_count / MB) or near(merged_mb, base_count / MB):
        return not_yet("that counts parameters, not bytes: each parameter takes p.element_size() bytes "
                       "(4 for float32, 2 for bfloat16), so sum p.numel() * p.element_size().")
    if all(near(got, want) or rounded_too_far(got, want, 1, 6) for got, want in (
            (adapter_mb, adapter_bytes / MB), (merged_mb, merged_bytes / MB))):
        return not_yet(ROUNDED_HINT)
    if near(adapter_mb, adapter_bytes / 2**20) or near(merged_mb, merged_bytes / 2**20):
        return not_yet("use MB = 1,000,000 bytes; you divided by 2**20 (that is a MiB).")
    if near(adapter_mb, 8 * adapter_bytes / MB) or near(merged_mb, 8 * merged_bytes / MB):
        return not_yet("that counts bits; a byte is 8 bits, and `element_size()` already gives bytes.")
    if near(adapter_mb, 2 * lora_count / MB):
        return not_yet("the LoRA weights are float32 here (peft keeps adapters in float32 even on a bf16 model): "
                       "read each parameter's own `element_size()` rather than assuming the model's dtype.")
    if near(merged_mb, 4 * base_count / MB):
        return not_yet("the base weights are bfloat16, 2 bytes each: read each parameter's `element_size()`.")
    if near(merged_mb, all_bytes / MB):
        return not_yet("merging folds B @ A into W: the merged model has only the base parameters, no lora_A/lora_B.")
    if near(adapter_mb, all_bytes / MB):
        return not_yet("the adapter holds only the LoRA weights (names containing 'lora_'), not the base model.")
    adapter_over, merged_over = round(adapter_mb * MB) - adapter_bytes, round(merged_mb * MB) - merged_bytes
    if not adapter_file and not near(adapter_mb, adapter_bytes / MB):
        if 0 < adapter_over <= FILE_OVERHEAD:
            return not_yet(f"adapter: {adapter_mb:.4f} MB is {adapter_over:,} bytes over its weights' {adapter_bytes:,}, "
                           "as if measured on a file saved another way, which adds its own bookkeeping. Count it from "
                           "its parameters, or measure the file save_pretrained writes.")
        return not_yet(f"adapter: {adapter_mb:.4f} MB, expected {adapter_bytes / MB:.4f}. Sum numel() * element_size() "
                       "over the parameters whose name contains 'lora_', then divide by 1,000,000.")
    if 0 < merged_over <= FILE_OVERHEAD:
        return not_yet(f"merged model: {merged_mb:.4f} MB is {merged_over:,} bytes over the {merged_bytes:,} bytes of "
                       "its parameters, as if measured on a saved file, which adds its own bookkeeping (a pickle, a "
                       "header). The merged size is counted from its parameters: sum numel() * element_size() over "
                       "those that are not LoRA's.")
    return not_yet(f"merged model: {merged_mb:.4f} MB, expected {merged_bytes / MB:.4f}. Sum numel() * element_size() "
                   "over the parameters that are not LoRA's, then divide by 1,000,000.")
