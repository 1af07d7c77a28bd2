"""Smallest reproductions of library behaviour that surprised us; each explains a choice in helpers.

If one of these starts failing after an upgrade, the library changed: revisit the workaround.
"""
import pytest
import torch


def test_processor_from_a_folder_without_model_config_loses_the_chat_template(processor, tmp_path):
    """VoxtralProcessor.from_pretrained on an adapter folder (processor files, no config.json)
    loads a generic tokenizer with no chat template; helpers.loading.load_processor builds the
    MistralCommonBackend explicitly instead."""
    from transformers import MistralCommonBackend, VoxtralProcessor

    processor.save_pretrained(tmp_path)
    reloaded = VoxtralProcessor.from_pretrained(tmp_path)
    assert not isinstance(reloaded.tokenizer, MistralCommonBackend)
    with pytest.raises(ValueError, match="chat_template is not set"):
        reloaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)


def test_load_processor_survives_the_same_folder(processor, profile, tmp_path):
    from transformers import MistralCommonBackend

    from helpers.loading import load_processor

    processor.save_pretrained(tmp_path)
    reloaded = load_processor(profile, adapter=tmp_path)
    assert isinstance(reloaded.tokenizer, MistralCommonBackend)
    assert reloaded.tokenizer.padding_side == "left"


def test_audio_text_to_text_pipeline_task_does_not_exist():
    """The published guide's `pipeline("audio-text-to-text")`: no such task in transformers 5."""
    from transformers.pipelines import check_task

    with pytest.raises(KeyError, match="audio-text-to-text"):
        check_task("audio-text-to-text")
    assert check_task("any-to-any")[0] == "any-to-any"


def test_voxtral_tokenizer_pads_left(processor):
    assert processor.tokenizer.padding_side == "left"


def test_kwargs_outside_processor_kwargs_warn(processor, caplog):
    """The guide passes padding=True straight to apply_chat_template: transformers warns that
    processor kwargs belong in `processor_kwargs`."""
    import numpy as np

    from helpers.tasks import build_conversation

    conversation = build_conversation({"audio": {"array": np.zeros(16000, np.float32), "sampling_rate": 16000},
                                       "category": "navigate"})
    import logging

    with caplog.at_level(logging.WARNING):
        processor.apply_chat_template(conversation, tokenize=True, return_dict=True, padding=True)
    assert "processor_kwargs" in caplog.text


def test_any_to_any_pipeline_batches_voxtral(model_and_processor, splits):
    """transformers 5.25 pads the feature extractor's inputs on its side and the text on the tokenizer's
    (left, for Voxtral), so `batch_size > 1` works; 5.24 refused it ("don't agree on padding side").
    Batched, the answers are the ones the pipeline gives one row at a time (float32, greedy), prompts of
    different lengths included. Notebook 05 shows `batch_size`."""
    import transformers
    from transformers import pipeline

    from helpers.tasks import build_conversation

    model, processor = model_and_processor
    assert model.dtype == torch.float32
    pipe = pipeline("any-to-any", model=model, processor=processor)
    rows = [splits["test"][i] for i in range(6)]
    assert len({row["category"] for row in rows}) > 1  # prompts of different lengths, so padding happens
    chats = [build_conversation(row) for row in rows]
    settings = dict(max_new_tokens=6, do_sample=False, return_full_text=False)
    one_at_a_time = [out[0]["generated_text"] for out in pipe(text=chats, batch_size=1, **settings)]
    batched = [out[0]["generated_text"] for out in pipe(text=chats, batch_size=4, **settings)]
    assert batched == one_at_a_time, transformers.__version__


def test_default_voxtral_config_has_no_audio_token_id():
    """`VoxtralConfig()` builds Voxtral-Mini-3B's architecture but leaves `audio_token_id` unset
    (the Hub config says 24), so a model built from it cannot place audio embeddings: the GPU
    benchmarks' `full_size_config()` sets the real id."""

    from transformers import VoxtralConfig

    assert VoxtralConfig().audio_token_id is None
    from benchmarks import train_step

    assert train_step.full_size_config().audio_token_id == 24


def test_bare_module_names_skip_nothing():
    """transformers 5.24 matches `llm_int8_skip_modules` from the start of a module's full name (or as
    a suffix): the bare "audio_tower" keeps no audio layer out of 4-bit (see test_model.py)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    assert should_convert_module("model.audio_tower.layers.0.self_attn.q_proj", ["audio_tower"])
    assert not should_convert_module("model.audio_tower.layers.0.self_attn.q_proj", ["model.audio_tower"])


def test_input_require_grads_reaches_the_audio_tower(profile):
    """transformers 5.24's `enable_input_require_grads` (called with activation checkpointing)
    hooks the input embeddings of every sub-model, the frozen audio tower's too: without
    `helpers.lora.freeze_audio_tower`'s detach, the tower is recomputed and back-propagated."""
    from transformers import VoxtralForConditionalGeneration

    model = VoxtralForConditionalGeneration.from_pretrained(profile.model_id)
    model.enable_input_require_grads()
    hooked = {id(h) for h in model._require_grads_hooks}
    assert len(hooked) >= 2
    tower_embeddings = model.model.audio_tower.get_input_embeddings()
    assert tower_embeddings._forward_hooks, "the audio tower's input embeddings carry a require-grads hook"


def test_hub_network_errors_are_not_httpx_errors():
    """huggingface_hub's errors derive from its bundled httpx2, so `except httpx.HTTPError` misses them."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    assert not issubclass(HfHubHTTPError, httpx.HTTPError)


def test_peft_keeps_lora_weights_in_float32_on_a_bf16_model():
    """peft's `autocast_adapter_dtype=True` (the default) keeps the LoRA weights in float32 on a
    bf16 base model, so a saved adapter is float32 (notebook 05's size exercise counts it so)."""
    from collections import OrderedDict

    import torch
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(OrderedDict(q_proj=torch.nn.Linear(8, 8))).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    assert model.base_model.model.q_proj.lora_A["default"].weight.dtype == torch.float32
    assert model.base_model.model.q_proj.base_layer.weight.dtype == torch.bfloat16


def test_datasets_reads_a_float16_array_column_back_as_float32():
    """datasets stores an `Array3D(dtype="float16")` column at half the size, but its numpy format
    hands the arrays back as float32 (so float16 features cost disk, not precision downstream)."""
    import numpy as np
    from datasets import Array3D, Dataset, Features

    features = Features({"input_features": Array3D(shape=(1, 2, 3), dtype="float16")})
    dataset = Dataset.from_dict({"input_features": [np.ones((1, 2, 3), np.float16)]}, features=features)
    stored = dataset.data.column("input_features").type.storage_type
    assert stored.value_type.value_type.value_type.to_pandas_dtype() == np.float16
    assert dataset.with_format("numpy")[0]["input_features"].dtype == np.float32


def test_transformers_serve_takes_openai_audio_bytes_for_a_file_name(model_and_processor):
    """OpenAI's standard audio part, `{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}`,
    is what a client that is not on the server's machine sends. transformers 5.25's server turns it into a
    `data:audio/wav;base64,...` URL (without `format`: the bare base64), and Voxtral's processor loads every audio
    URL with `load_audio_as`, which knows only http(s) URLs and files: the request fails with 400 "Error loading
    audio: File not found: data:audio/wav;base64,...". The same bytes as the processor's own base64 part work.
    `tutorial_kit.serving.start_server` therefore runs `transformers serve` with that one conversion added
    (`accept_audio_bytes`); when this test fails, the server takes the bytes by itself and the conversion can go."""
    import base64

    import numpy as np
    from transformers.cli.serving.model_manager import ModelLoader
    from transformers.cli.serving.utils import BaseHandler, Modality

    from helpers.audio import wav_bytes

    model, processor = model_and_processor
    assert ModelLoader.get_model_modality(model.config, processor) == Modality.MULTIMODAL  # the server's audio path
    data = base64.b64encode(wav_bytes(np.zeros(16000, np.float32))).decode("ascii")
    for input_audio in ({"data": data, "format": "wav"}, {"data": data}):
        messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": input_audio},
                                                 {"type": "text", "text": "What do you hear?"}]}]
        parts = BaseHandler.get_processor_inputs_from_messages(messages, Modality.MULTIMODAL)
        with pytest.raises(ValueError, match="Error loading audio: File not found: (data:audio/wav;base64,)?UklGR"):
            processor.apply_chat_template(parts, add_generation_prompt=True, tokenize=True, return_dict=True)
    as_base64 = [{"role": "user", "content": [{"type": "audio", "base64": data}, {"type": "text", "text": "What?"}]}]
    assert "input_features" in processor.apply_chat_template(as_base64, tokenize=True, return_dict=True)


def _audiofolder(folder, metadata_name: str, text: str):
    import numpy as np
    import soundfile as sf
    from datasets import Audio, load_dataset

    (folder / "clips").mkdir(exist_ok=True)
    sf.write(folder / "clips" / "0.wav", np.zeros(1600, np.float32), 16000)
    sf.write(folder / "clips" / "1.wav", np.zeros(1600, np.float32), 16000)
    (folder / metadata_name).write_text(text)
    found = load_dataset("audiofolder", data_dir=str(folder), split="train")
    return found.cast_column("audio", Audio(decode=False))


def test_audiofolder_cannot_read_a_jsonl_column_of_text_and_numbers(tmp_path):
    """pyarrow reads each JSONL column as one type, so answers "Yes" and 7 stop audiofolder with
    "changed from string to number"; tutorial_kit.own_data names the rows first, with the fix."""
    import pyarrow

    with pytest.raises(pyarrow.ArrowInvalid, match="changed from string to number"):
        _audiofolder(tmp_path, "metadata.jsonl", '{"file_name": "clips/0.wav", "answer": "Yes"}\n'
                                                  '{"file_name": "clips/1.wav", "answer": 7}\n')


def test_audiofolder_keeps_rows_whose_file_is_missing_and_skips_files_without_a_row(tmp_path):
    """A metadata row naming a file that is not there still becomes a row (it fails only when decoded), and a
    clip the metadata does not name is left out without a word: tutorial_kit.own_data checks every file first."""
    found = _audiofolder(tmp_path, "metadata.csv", "file_name,answer\nclips/0.wav,a\nclips/missing.wav,b\n")
    assert [clip["path"] for clip in found["audio"]] == [str(tmp_path / "clips" / "0.wav"),
                                                         str(tmp_path / "clips" / "missing.wav")]


def test_audiofolder_cannot_read_an_absolute_file_name(tmp_path):
    from datasets.exceptions import DatasetGenerationError

    with pytest.raises(DatasetGenerationError):
        _audiofolder(tmp_path, "metadata.csv", f"file_name,answer\n{tmp_path / 'clips' / '0.wav'},a\n")


def test_tqdms_notebook_bar_ignores_tqdm_disable():
    """TQDM_DISABLE=1 turns off tqdm's terminal bar, not its notebook bar (what tqdm.auto gives in a kernel),
    so an executed notebook kept a bar stuck at 0%; helpers.evaluate uses huggingface_hub's tqdm, which
    HF_HUB_DISABLE_PROGRESS_BARS turns off (the Makefile's tutorial target sets it)."""
    import os
    import subprocess
    import sys

    script = ("from tqdm import tqdm as terminal; from tqdm.notebook import tqdm as notebook; "
              "from huggingface_hub.utils import tqdm as hub; "
              "print('disabled:', terminal(range(1)).disable, notebook(range(1)).disable, hub(range(1), disable=False).disable)")
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    result = next(line for line in done.stdout.splitlines() if line.startswith("disabled:"))
    assert result.split()[1:] == ["True", "False", "True"]  # terminal, notebook (not turned off), huggingface_hub
