"""The Hub-layout stand-ins: folders laid out like mistralai/Voxtral-Mini-3B-2507 and
ArtificialAnalysis/big_bench_audio, loaded through the very calls the `full` profile makes."""
import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from helpers.profiles import CACHE_ENV
from helpers.tasks import CATEGORIES
from tools import standin
from tutorial_kit import tiny

MODEL_FILES = {
    "config.json", "generation_config.json", "preprocessor_config.json", "tekken.json", "params.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
}
LEGACY_PREFIXES = ("language_model.model.", "language_model.lm_head.", "audio_tower.", "multi_modal_projector.")
DATASET_ROWS = 16
LONG_SHARE = 0.25  # 4 of 16: enough long clips to check in a small build


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    return standin.write_model_standin(tmp_path_factory.mktemp("standin") / "Voxtral-Mini-3B-2507")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("standin") / "big_bench_audio"
    return standin.write_dataset_standin(folder, rows=DATASET_ROWS, long_share=LONG_SHARE)


@pytest.fixture(scope="module")
def legacy_tensors(small_model) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(small_model.glob("model-*.safetensors")):
        tensors.update(read_safetensors(shard))
    return tensors


# ------------------------------------------------------------------------------------ model
def test_model_folder_has_the_hub_files_and_no_processor_config(small_model):
    names = {p.name for p in small_model.iterdir()}
    assert names == MODEL_FILES | {"consolidated.safetensors"}
    assert "processor_config.json" not in names


def test_index_maps_every_legacy_key_to_an_existing_shard(small_model, legacy_tensors):
    index = json.loads((small_model / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    assert set(weight_map.values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    for key, shard in weight_map.items():
        with safe_open(str(small_model / shard), framework="pt") as f:
            assert key in f.keys(), f"{key} is mapped to {shard}, which does not hold it"
    assert set(weight_map) == set(legacy_tensors)
    assert all(key.startswith(LEGACY_PREFIXES) for key in weight_map), [
        k for k in weight_map if not k.startswith(LEGACY_PREFIXES)]
    assert "language_model.lm_head.weight" in weight_map
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in legacy_tensors.values())


def test_config_json_is_written_the_way_transformers_4_54_wrote_it(small_model):
    config = json.loads((small_model / "config.json").read_text())
    assert config["architectures"] == ["VoxtralForConditionalGeneration"]
    assert config["torch_dtype"] == "bfloat16" and "dtype" not in config
    assert config["transformers_version"].startswith("4.54.0")
    assert config["audio_config"]["model_type"] == "voxtral_encoder"
    assert config["text_config"]["model_type"] == "llama"
    assert config["audio_token_id"] == 24 and config["projector_hidden_act"] == "gelu"
    # 4.54 spelled RoPE as rope_theta/rope_scaling; transformers 5 writes rope_parameters instead.
    assert "rope_theta" in config["text_config"] and "rope_parameters" not in config["text_config"]
    assert config["text_config"]["vocab_size"] == 131072 == config["vocab_size"]
    generation = json.loads((small_model / "generation_config.json").read_text())
    assert {k: generation[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")} == {
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11}
    features = json.loads((small_model / "preprocessor_config.json").read_text())
    assert features["feature_extractor_type"] == "WhisperFeatureExtractor" and features["feature_size"] == 128
    tekken = json.loads((small_model / "tekken.json").read_text())
    assert tekken["config"]["default_vocab_size"] == 131072


def test_small_model_keeps_the_tiny_architecture_with_the_real_vocabulary(small_model):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(small_model)
    assert config.text_config.hidden_size == 64 and config.text_config.num_hidden_layers == 2
    assert config.audio_config.hidden_size == 64 and config.audio_config.num_hidden_layers == 2
    assert config.text_config.vocab_size == 131072
    assert config.audio_token_id == 24
    assert config.dtype == torch.bfloat16  # read from the legacy "torch_dtype"
    assert config.text_config.rope_parameters["rope_theta"] == 1e8  # converted from legacy "rope_theta"


def expected_loaded_name(legacy: str) -> str:
    """Where transformers 5 puts each legacy checkpoint key (written out here, not asked of the library)."""
    if legacy == "language_model.lm_head.weight":
        return "lm_head.weight"
    if legacy.startswith("language_model.model."):
        return "model.language_model." + legacy[len("language_model.model."):]
    return "model." + legacy


def test_from_pretrained_renames_every_legacy_key_and_keeps_its_values(small_model, legacy_tensors):
    from transformers import VoxtralForConditionalGeneration

    model, info = VoxtralForConditionalGeneration.from_pretrained(small_model, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded = model.state_dict()
    assert len(loaded) == len(legacy_tensors)
    for legacy, written in legacy_tensors.items():
        value = loaded[expected_loaded_name(legacy)]
        assert torch.equal(value.to(written.dtype), written), legacy
    # The head keeps the tiny profile's wide initialisation (see tutorial_kit.tiny.build_tiny_model).
    assert 0.12 < float(loaded["lm_head.weight"].float().std()) < 0.18


def test_the_small_model_answers_an_audio_question_on_cpu(small_model):
    import numpy as np
    from transformers import AutoProcessor, VoxtralForConditionalGeneration

    from helpers.audio import wav_bytes

    processor = AutoProcessor.from_pretrained(small_model)
    assert type(processor).__name__ == "VoxtralProcessor"
    assert processor.feature_extractor.feature_size == 128
    assert processor.tokenizer.pad_token_id == 11
    model = VoxtralForConditionalGeneration.from_pretrained(small_model, dtype=torch.float32)
    audio = base64.b64encode(wav_bytes(np.zeros(16000, dtype=np.float32))).decode()
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "base64": audio}, {"type": "text", "text": "Yes or no?"}]}],
        return_tensors="pt")
    assert int((inputs["input_ids"] == 24).sum()) == 375  # one 30-s chunk of [AUDIO] tokens
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 3
    assert time.perf_counter() - start < 30


def test_consolidated_safetensors_holds_the_same_weights_under_mistral_names(small_model, legacy_tensors):
    """Mistral's native checkpoint, checked with transformers' own Voxtral conversion rules
    (convert_voxtral_weights_to_hf.py: STATE_DICT_MAPPING and permute_for_rope)."""
    mapping = {
        r"^output.weight": r"language_model.lm_head.weight",
        r"^norm.weight": r"language_model.model.norm.weight",
        r"^layers.(\d+).attention_norm.weight": r"language_model.model.layers.\1.input_layernorm.weight",
        r"^layers.(\d+).ffn_norm.weight": r"language_model.model.layers.\1.post_attention_layernorm.weight",
        r"^layers.(\d+).attention.w(q|k|v|o).weight": r"language_model.model.layers.\1.self_attn.\2_proj.weight",
        r"^layers.(\d+).feed_forward.w1.weight": r"language_model.model.layers.\1.mlp.gate_proj.weight",
        r"^layers.(\d+).feed_forward.w2.weight": r"language_model.model.layers.\1.mlp.down_proj.weight",
        r"^layers.(\d+).feed_forward.w3.weight": r"language_model.model.layers.\1.mlp.up_proj.weight",
        r"mm_whisper_embeddings.tok_embeddings.weight": r"language_model.model.embed_tokens.weight",
        r"mm_whisper_embeddings.whisper_encoder\.conv_layers\.0\.(weight|bias)": r"audio_tower.conv1.\1",
        r"mm_whisper_embeddings.whisper_encoder\.conv_layers\.1\.(weight|bias)": r"audio_tower.conv2.\1",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.norm\.(weight|bias)": r"audio_tower.layer_norm.\1",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.attention\.w([qkv])\.(weight|bias)":
            r"audio_tower.layers.\1.self_attn.\2_proj.\3",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.attention\.wo\.(weight|bias)":
            r"audio_tower.layers.\1.self_attn.out_proj.\2",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.attention_norm\.(weight|bias)":
            r"audio_tower.layers.\1.self_attn_layer_norm.\2",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.feed_forward\.w1\.(weight|bias)":
            r"audio_tower.layers.\1.fc1.\2",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.feed_forward\.w2\.(weight|bias)":
            r"audio_tower.layers.\1.fc2.\2",
        r"mm_whisper_embeddings.whisper_encoder\.transformer\.layers\.(\d+)\.ffn_norm\.(weight|bias)":
            r"audio_tower.layers.\1.final_layer_norm.\2",
        r"mm_whisper_embeddings.audio_language_projection\.0\.weight": r"multi_modal_projector.linear_1.weight",
        r"mm_whisper_embeddings.audio_language_projection\.2\.weight": r"multi_modal_projector.linear_2.weight",
    }

    def to_hf(key):
        for pattern, replacement in mapping.items():
            new, count = re.subn(pattern, replacement, key)
            if count:
                return new
        raise AssertionError(f"{key} has no Mistral-to-transformers mapping")

    def permute_for_rope(tensor, n_heads):
        dim1, dim2 = tensor.shape
        return tensor.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)

    text = json.loads((small_model / "config.json").read_text())["text_config"]
    mistral = read_safetensors(small_model / "consolidated.safetensors")
    converted = {}
    for key, tensor in mistral.items():
        new = to_hf(key)
        if new.startswith("language_model.") and new.endswith(("q_proj.weight", "k_proj.weight")):
            heads = text["num_attention_heads"] if "q_proj" in new else text["num_key_value_heads"]
            tensor = permute_for_rope(tensor, heads)
        converted[new] = tensor
    # Mistral's checkpoint has no position table: the audio encoder's sinusoids are computed.
    assert set(converted) == set(legacy_tensors) - {"audio_tower.embed_positions.weight"}
    for key, tensor in converted.items():
        assert torch.equal(tensor, legacy_tensors[key]), key


def test_params_json_converts_to_the_same_architecture_as_config_json(small_model):
    """transformers' convert_config (convert_voxtral_weights_to_hf.py) reads these params.json keys."""
    params = json.loads((small_model / "params.json").read_text())
    config = json.loads((small_model / "config.json").read_text())
    text, audio = config["text_config"], config["audio_config"]
    assert {k: text[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                                 "num_key_value_heads", "rms_norm_eps", "head_dim", "vocab_size", "rope_theta",
                                 "max_position_embeddings")} == {
        "hidden_size": params["dim"], "num_hidden_layers": params["n_layers"], "intermediate_size": params["hidden_dim"],
        "num_attention_heads": params["n_heads"], "num_key_value_heads": params["n_kv_heads"],
        "rms_norm_eps": params["norm_eps"], "head_dim": params["head_dim"], "vocab_size": params["vocab_size"],
        "rope_theta": params["rope_theta"], "max_position_embeddings": params["max_seq_len"]}
    encoder = params["multimodal"]["whisper_model_args"]["encoder_args"]
    assert {k: audio[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                                  "num_key_value_heads", "head_dim", "vocab_size")} == {
        "hidden_size": encoder["dim"], "num_hidden_layers": encoder["n_layers"], "intermediate_size": encoder["hidden_dim"],
        "num_attention_heads": encoder["n_heads"], "num_key_value_heads": encoder["n_heads"],
        "head_dim": encoder["head_dim"], "vocab_size": encoder["vocab_size"]}
    assert encoder["audio_encoding_args"]["num_mel_bins"] == audio["num_mel_bins"] == 128


def test_small_model_build_is_byte_for_byte_deterministic(small_model, tmp_path):
    again = standin.write_model_standin(tmp_path / "again")
    assert file_digests(again) == file_digests(small_model)


def test_a_different_seed_gives_different_weights(small_model, tmp_path, legacy_tensors):
    other = standin.write_model_standin(tmp_path / "other", seed=standin.SEED + 1, with_consolidated=False)
    weights = read_safetensors(other / "model-00002-of-00002.safetensors")
    assert not torch.equal(weights["language_model.lm_head.weight"], legacy_tensors["language_model.lm_head.weight"])


def test_full_size_plan_matches_voxtral_mini_on_the_meta_device():
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    plan = standin.model_plan("full")
    with torch.device("meta"):
        reference = VoxtralForConditionalGeneration(VoxtralConfig(audio_token_id=24))
    shapes = {name: tuple(p.shape) for name, p in reference.state_dict().items()}
    assert {spec.loaded_name: spec.shape for spec in plan.tensors} == shapes
    assert all(spec.name.startswith(LEGACY_PREFIXES) for spec in plan.tensors)
    assert all(expected_loaded_name(spec.name) == spec.loaded_name for spec in plan.tensors)
    assert len(plan.tensors) == 762
    assert 4.67e9 < plan.num_parameters < 4.69e9
    assert plan.shard_files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    shard_bytes = {f: sum(s.nbytes for s in plan.tensors if s.shard_file == f) for f in plan.shard_files}
    assert all(size <= 5 * 10**9 for size in shard_bytes.values()), shard_bytes
    assert 9.3e9 < plan.total_size < 9.4e9  # the Hub's two shards hold ~9.4 GB
    index = plan.index()
    assert set(index["weight_map"]) == {s.name for s in plan.tensors}
    assert {s.dtype for s in plan.tensors} == {torch.bfloat16, torch.float32}  # fp32: only the position table
    assert [s.name for s in plan.tensors if s.dtype == torch.float32] == ["audio_tower.embed_positions.weight"]


def test_full_size_dry_run_writes_the_hub_configs_and_no_weights(tmp_path):
    from transformers import AutoConfig, AutoProcessor

    folder = standin.write_model_standin(tmp_path / "full", size="full", dry_run=True)
    names = {p.name for p in folder.iterdir()}
    assert names == MODEL_FILES - {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    config = AutoConfig.from_pretrained(folder)
    assert (config.audio_config.hidden_size, config.audio_config.num_hidden_layers) == (1280, 32)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (3072, 30)
    assert config.text_config.vocab_size == 131072 and config.audio_token_id == 24
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(index["weight_map"]) == 762
    assert AutoProcessor.from_pretrained(folder).tokenizer.pad_token_id == 11


def test_model_standin_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        standin.write_model_standin(tmp_path)


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'medium'.*small.*full"):
        standin.write_model_standin(tmp_path / "m", size="medium")


# ------------------------------------------------------------------------------------ dataset
def test_dataset_folder_has_the_hub_layout(small_dataset):
    names = {p.name for p in small_dataset.iterdir()}
    assert names == {"README.md", "metadata.jsonl", "data"}
    card = (small_dataset / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" not in card
    rows = [json.loads(line) for line in (small_dataset / "metadata.jsonl").read_text().splitlines()]
    assert [list(row) for row in rows] == [["category", "official_answer", "file_name", "id"]] * DATASET_ROWS
    assert sorted(row["id"] for row in rows) == list(range(DATASET_ROWS))
    for row in rows:
        assert row["file_name"] == f"data/question_{row['id']}.mp3"
        assert (small_dataset / row["file_name"]).is_file()
    assert sorted(p.name for p in (small_dataset / "data").iterdir()) == sorted(
        f"question_{i}.mp3" for i in range(DATASET_ROWS))


def test_answers_are_the_generators_answers_in_big_bench_audio_formats(small_dataset):
    from tutorial_kit.tiny import synthetic

    rows = {r["id"]: r for r in map(json.loads, (small_dataset / "metadata.jsonl").read_text().splitlines())}
    generated = synthetic.generate_questions(per_category=DATASET_ROWS // 4, seed=standin.SEED)
    assert {r["id"]: (r["category"], r["official_answer"]) for r in generated} == {
        i: (r["category"], r["official_answer"]) for i, r in rows.items()}
    formats = {"formal_fallacies": {"valid", "invalid"}, "navigate": {"Yes", "No"}, "web_of_lies": {"Yes", "No"}}
    for row in rows.values():
        if row["category"] == "object_counting":
            assert row["official_answer"].isdigit(), row
        else:
            assert row["official_answer"] in formats[row["category"]], row


def test_load_dataset_reads_the_folder_like_the_hub_dataset(small_dataset):
    from datasets import load_dataset

    dataset = load_dataset(str(small_dataset), split="train")
    assert len(dataset) == DATASET_ROWS
    # audiofolder swaps metadata's file_name for a decoded `audio` column in place and adds nothing.
    assert dataset.column_names == ["category", "official_answer", "audio", "id"]
    assert dataset.features["id"].dtype == "int64"
    assert dataset.features["audio"].sampling_rate is None  # decoded at the file's own rate
    assert {c: dataset["category"].count(c) for c in CATEGORIES} == {c: DATASET_ROWS // 4 for c in CATEGORIES}
    durations = []
    for row in dataset:
        samples = row["audio"].get_all_samples()  # a torchcodec decoder, as for the Hub's MP3s
        assert samples.sample_rate == 22050 and samples.data.shape[0] == 1
        durations.append(samples.data.shape[1] / samples.sample_rate)
    # Long clips need a second 30-s chunk; the others fit in one, and none is empty.
    assert sum(d > 30 for d in durations) == round(LONG_SHARE * DATASET_ROWS), durations
    assert min(durations) > 1


def test_clips_are_mp3_at_22050_hz_mono(small_dataset):
    import soundfile as sf

    durations = standin.clip_durations(small_dataset)
    assert sorted(durations) == list(range(DATASET_ROWS))
    for i in range(DATASET_ROWS):
        info = sf.info(str(small_dataset / "data" / f"question_{i}.mp3"))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("MP3", "MPEG_LAYER_III", 22050, 1)
    assert sum(d > 30 for d in durations.values()) == round(LONG_SHARE * DATASET_ROWS)


def test_rows_must_split_evenly_over_the_four_categories(tmp_path):
    with pytest.raises(ValueError, match="rows=10.*multiple of 4"):
        standin.write_dataset_standin(tmp_path / "d", rows=10)


def test_long_share_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="long_share=1.5"):
        standin.write_dataset_standin(tmp_path / "d", rows=8, long_share=1.5)


# ------------------------------------------------------------------------------------ cache and command
def test_build_once_builds_once_for_two_callers_at_a_time(tmp_path):
    calls = []

    def build(folder: Path):
        calls.append(folder)
        time.sleep(0.5)
        folder.mkdir(parents=True)
        (folder / "payload").write_text("x")

    root = tmp_path / "cache" / "thing"
    threads = [threading.Thread(target=tiny.build_once, args=(root, build, "1")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert (root / "payload").read_text() == "x" and (root / "COMPLETE").read_text() == "1"
    assert not root.with_name("thing.tmp").exists()


def test_build_once_leaves_no_half_built_folder_behind(tmp_path):
    root = tmp_path / "thing"

    def broken(folder: Path):
        folder.mkdir(parents=True)
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tiny.build_once(root, broken, "1")
    assert not root.exists()
    tiny.build_once(root, lambda folder: folder.mkdir(parents=True), "1")
    assert (root / "COMPLETE").exists() and not (root / "half").exists()


def test_command_builds_both_folders_and_says_what_it_wrote(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.standin", "--model-dir", str(tmp_path / "m"), "--dataset-dir",
         str(tmp_path / "d"), "--rows", "4"], capture_output=True, text=True, check=True)
    assert "model-00001-of-00002.safetensors" in result.stdout and "4 clips" in result.stdout
    assert re.search(r"in \d+\.\d s", result.stdout)
    assert len(list((tmp_path / "d" / "data").glob("*.mp3"))) == 4
    assert (tmp_path / "m" / "config.json").is_file()


def test_command_help_explains_each_option():
    result = subprocess.run([sys.executable, "-m", "tools.standin", "--help"], capture_output=True, text=True,
                            check=True)
    for option in ("--model-dir", "--dataset-dir", "--size", "--rows", "--seed", "--long-share"):
        assert option in result.stdout
    no_folder = subprocess.run([sys.executable, "-m", "tools.standin"], capture_output=True, text=True)
    assert no_folder.returncode == 2 and "--model-dir" in no_folder.stderr


@pytest.mark.extended  # builds 1000 MP3 clips (about 50 s): `make check` and CI run it
def test_ensure_standins_builds_the_1000_row_dataset_once(tmp_path, monkeypatch):
    """The one full-size dataset build: 1000 rows, 250 per category, ~9% of clips over 30 s."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    start = time.perf_counter()
    assets = standin.ensure_standins("small", rows=1000)
    seconds = time.perf_counter() - start
    print(f"\nensure_standins('small', rows=1000) built in {seconds:.1f} s")
    assert assets.model_dir.parent == assets.dataset_dir.parent == tmp_path / f"standin-v{standin.VERSION}-small-1000"
    from datasets import load_dataset

    dataset = load_dataset(str(assets.dataset_dir), split="train")
    assert len(dataset) == 1000
    assert {c: dataset["category"].count(c) for c in CATEGORIES} == {c: 250 for c in CATEGORIES}
    durations = standin.clip_durations(assets.dataset_dir)
    long = sum(d > 30 for d in durations.values())
    assert 80 <= long <= 100, long
    start = time.perf_counter()
    assert standin.ensure_standins("small", rows=1000) == assets
    assert time.perf_counter() - start < 1  # cached
