"""The preflight checks: on simulated GPUs (a T4, an H100, one too small), with the Hub answering,
refusing or unreachable, with tools missing and disks full; and the command's exit status."""
import json
import re
import types
from pathlib import Path

import httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub.errors import GatedRepoError

from helpers.profiles import FULL_MODEL_ID, get_profile
from tutorial_kit import preflight

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30
# The files of mistralai/Voxtral-Mini-3B-2507 on the Hub.
HUB_MODEL_FILES = [".gitattributes", "README.md", "config.json", "consolidated.safetensors", "generation_config.json",
                   "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                   "model.safetensors.index.json", "params.json", "preprocessor_config.json", "tekken.json"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the Hub: every call a test does not fake fails at once."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("VOXTRAL_MODEL", "VOXTRAL_DATASET", "VOXTRAL_MAX_STEPS", "VOXTRAL_DTYPE", "VOXTRAL_GPU_MEMORY_GIB"):
        monkeypatch.delenv(name, raising=False)


def simulate_gpu(monkeypatch, name: str, capability: tuple[int, int], memory_gib: float):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=0: types.SimpleNamespace(total_memory=int(memory_gib * GIB)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # what it says on a T4 too


def simulate_t4(monkeypatch):
    simulate_gpu(monkeypatch, "Tesla T4", (7, 5), 14.74)


def full_checks() -> preflight.Preflight:
    return preflight.Preflight(get_profile("full"))


def test_every_check_has_a_method_and_notebook_00_runs_them_in_order():
    cells = json.loads((ROOT / "notebooks" / "00_preflight.ipynb").read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    calls = [f"checks.{name.replace(' ', '_')}()" for name in preflight.CHECKS]
    positions = [source.find(call) for call in calls]
    assert -1 not in positions, [c for c, p in zip(calls, positions) if p == -1]
    assert positions == sorted(positions)
    for name in preflight.CHECKS:
        assert callable(getattr(preflight.Preflight, name.replace(" ", "_")))


# ------------------------------------------------------------------------------------ gpu
def test_a_t4_gets_fp16_and_4_bits_although_torch_says_bf16_is_supported(monkeypatch):
    simulate_t4(monkeypatch)
    check = full_checks().gpu()
    assert check.status == "PASS", check
    assert "Tesla T4, 14.7 GiB, compute capability 7.5" in check.message
    assert "no native bf16" in check.message and "float16" in check.message and "4 bits" in check.message


def test_an_h100_gets_bf16_unquantized(monkeypatch):
    simulate_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0), 79.2)
    check = full_checks().gpu()
    assert check.status == "PASS" and "native bf16" in check.message and "bfloat16" in check.message
    assert "unquantized" in check.message


def test_a_gpu_too_small_for_the_full_profile_fails(monkeypatch):
    simulate_gpu(monkeypatch, "Quadro P4000", (6, 1), 7.9)
    check = full_checks().gpu()
    assert check.status == "FAIL" and "under 12 GiB" in check.message and "T4" in check.fix


def test_no_gpu_fails_the_full_profile_and_informs_the_tiny_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    full = full_checks().gpu()
    assert full.status == "FAIL" and "Runtime > Change runtime type > T4 GPU" in full.fix and "VOXTRAL_PROFILE=tiny" in full.fix
    assert preflight.Preflight(get_profile("tiny")).gpu().status == "INFO"


@pytest.mark.parametrize("installed, gpu, status", [
    (False, "t4", "FAIL"),  # a T4 loads in 4 bits: bitsandbytes is needed
    (False, "h100", "INFO"),  # an H100 does not
    (True, "t4", "PASS"),
])
def test_bitsandbytes(monkeypatch, installed, gpu, status):
    if gpu == "t4":
        simulate_t4(monkeypatch)
    else:
        simulate_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0), 79.2)
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes",
                        types.SimpleNamespace(__version__="0.48.2") if installed else None)  # None: ImportError
    check = full_checks().bitsandbytes()
    assert check.status == status, check
    if status == "FAIL":
        assert "setup cell" in check.fix and "pip install bitsandbytes" in check.fix


# ------------------------------------------------------------------------------------ audio tools
def test_ffmpeg_and_torchcodec_pass_here():
    checks = preflight.Preflight(get_profile("tiny"))
    assert checks.ffmpeg().status == "PASS"
    torchcodec = checks.torchcodec()
    assert torchcodec.status == "PASS" and "decoded a 1-s MP3" in torchcodec.message


def test_missing_ffmpeg_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(preflight.shutil, "which", lambda tool: None)
    check = preflight.Preflight(get_profile("tiny")).ffmpeg()
    assert check.status == "FAIL" and "apt-get install ffmpeg" in check.fix


def test_without_the_ffmpeg_program_the_test_mp3_comes_from_torchcodec(monkeypatch):
    from helpers.audio import load_audio

    monkeypatch.setattr(preflight.shutil, "which", lambda tool: None)
    mp3 = preflight._test_mp3(seconds=1.0)
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF  # an MP3 header
    assert abs(len(load_audio(mp3)) - 16000) < 1600


def test_a_torchcodec_that_cannot_decode_names_the_matching_release(monkeypatch):
    import helpers.audio

    def broken(*args, **kwargs):
        raise RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not properly installed")

    monkeypatch.setattr(helpers.audio, "load_audio", broken)
    check = preflight.Preflight(get_profile("tiny")).torchcodec()
    major_minor = ".".join(torch.__version__.split(".")[:2])
    assert check.status == "FAIL" and "Could not load libtorchcodec" in check.message
    assert f"torchcodec==0.{major_minor.split('.')[1]}.*" in check.fix and "Restart session" in check.fix


# ------------------------------------------------------------------------------------ disk
def test_model_size_matches_the_architecture():
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(VoxtralConfig())
    bf16_gb = sum(p.numel() for p in model.parameters()) * 2 / 1e9
    assert abs(preflight.MODEL_GB - bf16_gb) < 0.1, bf16_gb


def test_the_tower_output_sizes_are_the_architectures(monkeypatch):
    from transformers import VoxtralConfig

    from tutorial_kit.tiny import tiny_config

    for config, width in ((VoxtralConfig().audio_config, preflight.FULL_TOWER_WIDTH),
                          (tiny_config().audio_config, preflight.TINY_TOWER_WIDTH)):
        assert (config.max_source_positions, config.hidden_size) == (preflight.TOWER_POSITIONS, width)
    simulate_t4(monkeypatch)  # fp16: half the bytes
    assert preflight.tower_output_gb_per_chunk(get_profile("full")) == pytest.approx(1500 * 1280 * 2 / 1e9)


def test_a_full_disk_fails_and_a_local_model_needs_less(monkeypatch, tmp_path):
    needs = {what: gb for what, _, gb in full_checks().disk_needs()}
    assert needs["model download"] == preflight.MODEL_GB and needs["notebook 05's merged model"] == preflight.MODEL_GB
    assert needs["log-mel feature cache"] == pytest.approx(0.1536)  # notebook 04's 100 test rows
    assert needs["audio tower output cache"] == pytest.approx(7.68)  # 1000 chunks in float32 (no GPU here)
    monkeypatch.setenv("VOXTRAL_MODEL", str(tmp_path))
    assert "model download" not in {what for what, _, _ in full_checks().disk_needs()}

    monkeypatch.delenv("VOXTRAL_MODEL")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=5e9))
    check = full_checks().disk()
    assert check.status == "FAIL" and "5.0 GB free" in check.message and "more at" in check.fix


# ------------------------------------------------------------------------------------ the Hub
@pytest.fixture()
def hub(monkeypatch):
    """The Hub's API faked: `answer` decides what model_info / dataset_info do; calls are counted."""
    state = {"calls": 0, "answer": "files", "head": "ok"}

    def info(self, repo_id, timeout=None, **kwargs):
        state["calls"] += 1
        assert timeout == preflight.HUB_TIMEOUT_S  # never the default of minutes
        if state["answer"] == "offline":
            raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")
        if state["answer"] == "gated":
            raise GatedRepoError(f"401 Client Error. Cannot access gated repo for url https://huggingface.co/api/models/{repo_id}.",
                                 response=httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co")))
        names = HUB_MODEL_FILES if repo_id == FULL_MODEL_ID else ["README.md", "metadata.jsonl", "data/question_0.mp3"]
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=n) for n in names])

    def head(url, timeout=None, **kwargs):
        state["head_url"] = url
        if state["head"] != "ok":
            raise httpx2.ReadTimeout("The read operation timed out")
        return types.SimpleNamespace(size=1)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", info)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", info)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", head)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(huggingface_hub.errors.LocalEntryNotFoundError("not cached")))
    return state


def test_hub_reachable_with_every_file(hub):
    checks = full_checks()
    model, dataset = checks.model_files(), checks.dataset_files()
    assert model.status == dataset.status == "PASS", (model, dataset)
    assert "9 files the tutorial can download" in model.message  # consolidated.safetensors and params.json left out
    assert hub["head_url"].endswith("/datasets/ArtificialAnalysis/big_bench_audio/resolve/main/metadata.jsonl")


def test_offline_says_so_plainly_once(hub, monkeypatch):
    hub["answer"] = "offline"
    tiny = preflight.Preflight(get_profile("tiny"))
    model, dataset = tiny.model_files(), tiny.dataset_files()
    assert model.status == dataset.status == "INFO"
    assert model.message.startswith("offline: huggingface.co cannot be reached (ConnectError: [Errno -3]")
    assert "mirror" in model.fix and "Traceback" not in str(model)
    assert hub["calls"] == 1  # found offline once; the dataset check does not wait for the network again
    full = full_checks()
    assert full.model_files().status == "FAIL"


def test_hf_hub_offline_set_too_late_is_pointed_out(hub, monkeypatch):
    hub["answer"] = "offline"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub was imported before: it still thinks it is online
    check = full_checks().model_files()
    assert "was set after huggingface_hub was imported" in check.message


def test_hf_hub_offline_skips_the_network(hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    check = full_checks().model_files()
    assert check.status == "FAIL" and "offline: HF_HUB_OFFLINE=1 is set" in check.message and hub["calls"] == 0


def test_a_gated_model_asks_for_a_login(hub):
    hub["answer"] = "gated"
    check = full_checks().model_files()
    assert check.status == "FAIL" and "not open to you" in check.message and "hf auth login" in check.fix


def test_listing_works_but_downloads_are_blocked(hub):
    hub["head"] = "blocked"
    check = full_checks().model_files()
    assert check.status == "FAIL" and "config.json cannot be downloaded (ReadTimeout" in check.message


def test_a_local_mirror_is_checked_file_by_file(monkeypatch, tmp_path):
    model = tmp_path / "Voxtral-Mini-3B-2507"
    model.mkdir()
    for name in ("config.json", "preprocessor_config.json", "tekken.json"):
        (model / name).write_text("{}")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (model / "model-00001-of-00002.safetensors").write_bytes(b"x" * 10)
    monkeypatch.setenv("VOXTRAL_MODEL", str(model))
    incomplete = full_checks().model_files()
    assert incomplete.status == "FAIL" and "lacks model-00002-of-00002.safetensors" in incomplete.message
    assert "python -m tutorial_kit.mirror" in incomplete.fix
    (model / "model-00002-of-00002.safetensors").write_bytes(b"x" * 10)
    assert full_checks().model_files().status == "PASS"

    monkeypatch.setenv("VOXTRAL_DATASET", str(tmp_path / "no-such-stick" / "big_bench_audio"))
    missing = full_checks().dataset_files()
    assert missing.status == "FAIL" and "neither a folder on this machine nor a Hub repository id" in missing.message


# ------------------------------------------------------------------------------------ training time
def projection_rows():
    """benchmarks/README.md's projection table: card, plan, peak TFLOPS, projected minutes."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    section = text.split("## Projected training time on other GPUs")[1]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[-1].endswith(" min"):
            micro = int(re.match(r"(\d+) x", cells[1]).group(1))
            rows.append({"card": cells[0], "four_bit": "4-bit" in cells[0], "micro": micro,
                         "checkpointing": "no checkpointing" not in cells[1],
                         "h100": float(cells[2].split()[0]), "peak": float(cells[3].split()[0]),
                         "minutes": float(cells[5].split()[0]), "tower_once_minutes": float(cells[6].split()[0])})
    return rows


def test_projection_reproduces_the_benchmarks_table_from_peak_ratios():
    rows = projection_rows()
    assert len(rows) == 5 and any(r["card"].startswith("T4") for r in rows)
    for row in rows:
        rate, _ = preflight.h100_rate(row["four_bit"], row["micro"], row["checkpointing"])
        assert rate == row["h100"], row["card"]
        seconds = preflight.projected_seconds(2700, rate, row["peak"], h100_tflops=989)
        assert seconds / 60 == pytest.approx(row["minutes"], rel=0.03), row["card"]
        once = preflight.projected_seconds(2700, rate, row["peak"], h100_tflops=989,
                                           tower_share=preflight.TOWER_SHARE[row["checkpointing"]], passes=3)
        assert once / 60 == pytest.approx(row["tower_once_minutes"], rel=0.03), row["card"]


def test_the_tower_shares_are_the_counted_ones():
    """The preflight's shares are copied into the package (Colab installs no benchmarks): each must be the
    share benchmarks.tower_once counts from the full-size architecture, to the digits shown."""
    from benchmarks.tower_once import tower_share_full_size

    counted = tower_share_full_size()
    assert preflight.TOWER_SHARE == {False: round(counted["tower_share"], 2),
                                     True: round(counted["tower_share_with_checkpointing"], 2)}


def test_training_samples_follow_the_profile(monkeypatch):
    assert preflight.training_samples(get_profile("full")) == 2700  # 3 epochs of 900
    monkeypatch.setenv("VOXTRAL_MAX_STEPS", "30")
    assert preflight.training_samples(get_profile("full")) == 480


def test_training_time_on_a_t4_is_a_labelled_projection(monkeypatch):
    simulate_t4(monkeypatch)
    checks = full_checks()
    measured = []
    checks.measure_matmul = lambda dtype: measured.append(dtype) or 25.0
    check = checks.training_time()
    assert measured == [torch.float16]
    # the 4-bit H100 measurement; 3 epochs run the tower once (checkpointing: 21% of a sample's FLOPs)
    expected = preflight.projected_seconds(2700, 8.4, 25.0, tower_share=0.21, passes=3)
    assert check.status == "PASS" and f"projected {expected / 3600:.1f} h" in check.message
    assert "A projection, not a measurement" in check.message and "VOXTRAL_MAX_STEPS=30" in check.message


def test_training_time_in_the_tiny_profile_quotes_the_measurement():
    check = preflight.Preflight(get_profile("tiny")).training_time()
    assert check.status == "INFO" and f"{preflight.TINY_NOTEBOOK_03_S:.0f} s" in check.message and "measured" in check.message


# ------------------------------------------------------------------------------------ the command
def test_a_check_that_breaks_is_a_fail_not_a_traceback(monkeypatch):
    def broken(path):
        raise OSError("[Errno 5] Input/output error: '/content/drive'")

    monkeypatch.setattr(preflight.shutil, "disk_usage", broken)
    check = preflight.Preflight(get_profile("tiny")).disk()
    assert check.status == "FAIL" and "Input/output error" in check.message


def test_command_exits_1_on_a_failure_and_0_offline_in_the_tiny_profile(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert preflight.main(["--profile", "full"]) == 1  # no GPU, and the Hub is off
    failed = capsys.readouterr().out
    assert "FAIL  gpu" in failed and "Fix these first" in failed and "Traceback" not in failed
    assert preflight.main(["--profile", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines() if line[:4] in ("PASS", "FAIL", "INFO")] == [
        name.split()[0] for name in preflight.CHECKS]
    assert "offline" in printed and "ready for the tiny profile" in printed


def test_check_lines_read_pass_fail_or_info_with_the_fix_below():
    assert str(preflight.Check("ffmpeg", "FAIL", "not installed", "sudo apt-get install ffmpeg")) == (
        "FAIL  ffmpeg         not installed\n" + " " * 21 + "fix: sudo apt-get install ffmpeg")


# The benchmark run each H100 rate of the training-time projection was measured in, and the variant's name there.
H100_RATE_SOURCES = {
    (False, 8, False): ("gpu_train_step_memory.json", "batch 8 x 2, no checkpointing"),
    (False, 16, True): ("gpu_train_step_memory.json", "batch 16, checkpointing"),
    (False, 4, True): ("gpu_train_step_two_chunks.json", "batch 4 x 4, checkpointing"),
    (True, None, None): ("gpu_train_step.json", "tuned 4-bit (batch 8 x 2, checkpointing; T4-sized)"),
}


def test_the_h100_rates_are_the_measured_ones():
    """The projection's rates are copied into the package (Colab installs no benchmark results): each must be the
    number its benchmark run recorded, to the digit shown."""
    assert set(preflight.H100_SAMPLES_PER_S) == set(H100_RATE_SOURCES)
    for key, (file, variant) in H100_RATE_SOURCES.items():
        run = json.loads((ROOT / "benchmarks" / "results" / file).read_text())
        measured = next(v for v in run["variants"] if v["name"] == variant)
        assert "H100" in run["device"], file
        assert (measured["load_in_4bit"], measured["micro_batch"], measured["gradient_checkpointing"])[: 1 if key[0] else 3] \
            == key[: 1 if key[0] else 3]
        assert preflight.H100_SAMPLES_PER_S[key][0] == round(measured["samples_per_s"], 1), (key, measured["samples_per_s"])
