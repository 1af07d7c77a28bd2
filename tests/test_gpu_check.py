"""`python -m benchmarks.gpu_check`: the GPU check for a short loan, rehearsed on the CPU (`--dry-run`).

The dry run runs the same parts through the same code at tiny size; what a CPU cannot do (fp16,
4-bit) is substituted or skipped, and the record says so. The timing and watchdog tests run parts
in fresh processes (`--launch exec`), as the GPU run does.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["t4_route", "bf16_train_step", "bf16_evaluation", "tower_once"]


def gpu_check(tmp_path, *arguments, env=None, wait=True):
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--quiet", "--json", str(tmp_path / "check.json"),
               "--logs", str(tmp_path / "logs"), *arguments]
    environment = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)


def installed(name):
    from importlib.metadata import version

    return version(name)


@pytest.mark.extended  # about 40 s on an idle 2-core machine; `make check` and CI run it
def test_dry_run_runs_every_part_and_records_what_it_substituted(tmp_path):
    import torch

    started = time.monotonic()
    done = gpu_check(tmp_path)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["dry_run"] and report["finished"] and report["launch"] == "fork"
    assert [r["part"] for r in report["parts"]] == PARTS
    for record in report["parts"]:
        assert record["status"] == "ok", (record["part"], record.get("error"), record.get("log"))
        assert record["card"].startswith("CPU dry run, no GPU ("), record
        assert record["torch"] == torch.__version__ and record["transformers"] == installed("transformers")
        assert 0 < record["wall_s"] <= record["limit_s"]
        assert all(record["checks"].values()), (record["checks"], record["check_details"])
        assert any("tiny config instead of VoxtralConfig()" in s for s in record["substituted"]), record["substituted"]
        skipped = {name: step for name, step in record["steps"].items() if step.get("status") == "skipped"}
        assert all("no CUDA GPU" in step["reason"] for step in skipped.values()), skipped

    t4, train, evaluation, tower = (r["steps"] for r in report["parts"])
    # The 4-bit load is skipped with its reason, not faked; the learner's loader then loads float32.
    assert len(report["parts"][0]["checks"]) >= 3  # loss finite, planned steps, merged unquantized, no LoRA left
    assert t4["load_4bit"]["status"] == "skipped" and "bitsandbytes" in t4["load_4bit"]["reason"]
    assert t4["load"]["four_bit"] is False and t4["load"]["dtype"] == "float32"
    assert any("4 bits" in s for s in report["parts"][0]["substituted"])
    # training_plan's plan for a small card: micro-batch 4 with checkpointing; a 35-s clip makes two chunks.
    assert t4["train"]["ran_with"]["micro_batch"] == 4 and t4["train"]["ran_with"]["activation_checkpointing"]
    assert t4["train"]["steps"] == 1 and t4["train"]["clips_over_30_s"] == 1
    assert t4["evaluate"]["rows"] == 4 and t4["merge"]["linear4bit_left"] == 0 and t4["merge"]["lora_modules_left"] == 0
    for variant in ("published", "tuned", "plan"):
        assert train[variant]["samples_per_s"] > 0, train[variant]
    assert train["published"]["micro_batch"] == 2 and train["tuned"]["micro_batch"] == 16
    assert train["tuned_over_published"]["ratio"] > 0 and train["flops"]["per_sample"] > 0
    compare = evaluation["compare"]
    assert compare["rows"] == 8 and compare["baseline"] > 0 and compare["ours"] > 0
    assert compare["same_predictions"] == 8  # float32: one at a time and batched agree
    assert compare["batched"]["model_tflops"] > 0 and compare["batched"]["mfu"] is None  # no GPU peak on a CPU
    # The tower once per row: both routes trained the same steps from the same start, to the same losses.
    assert len(tower["every_step"]["losses"]) == len(tower["once"]["losses"]) == 2
    assert tower["once"]["preparing_seconds"] > 0 and tower["compare"]["step_speedup"] > 0
    assert tower["compare"]["largest_loss_difference"] <= 1e-5  # float32 on the CPU

    table = (tmp_path / "check.md").read_text()
    for part in PARTS:
        assert f"| {part} | ok |" in table
    assert "CPU dry run, no GPU" in table and "Substituted on the CPU" in table and "skipped t4_route.load_4bit" in table
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    for part in PARTS:
        assert (tmp_path / "logs" / f"gpu_check_{part}.log").stat().st_size > 0
    print(f"dry run: {seconds:.0f} s (parts {[r['wall_s'] for r in report['parts']]}, imports {report.get('preload_s')} s)")


@pytest.mark.extended
def test_a_part_past_its_limit_is_stopped_and_recorded_and_the_next_part_runs(tmp_path):
    """As on a GPU: each part a fresh process. The JSON is rewritten after each part, so it can be
    read between them; the stopped part keeps what it recorded before its limit."""
    process = gpu_check(tmp_path, "--launch", "exec", "--parts", "bf16_train_step,bf16_evaluation",
                        "--stall", "bf16_train_step", "--limit", "bf16_train_step=25", "--limit", "bf16_evaluation=300",
                        wait=False)
    between = None
    try:
        while process.poll() is None:
            try:
                report = json.loads((tmp_path / "check.json").read_text())
            except (OSError, ValueError):  # not written yet; a rename never shows half a file
                report = None
            if report and report["parts"][0]["status"] != "running" and report["parts"][0]["status"] != "pending":
                between = between or report
            time.sleep(0.2)
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, output[-3000:]  # not every part is ok
    assert between is not None and between["parts"][0]["status"] == "timed out", between
    assert between["parts"][1]["status"] in ("pending", "running", "ok") and not between["finished"]

    report = json.loads((tmp_path / "check.json").read_text())
    stopped, following = report["parts"]
    assert stopped["status"] == "timed out" and stopped["error"] == "stopped after its limit of 25 s", stopped
    assert 25 <= stopped["wall_s"] < 40 and stopped["launch"] == "exec"
    assert "stall" in stopped["steps"] and stopped["card"].startswith("CPU dry run")  # recorded before the limit
    with pytest.raises(ProcessLookupError):
        os.kill(stopped["pid"], 0)  # the stalled process is gone
    assert following["status"] == "ok", (following.get("error"), following.get("log"))
    assert following["card"].startswith("CPU dry run") and following["steps"]["compare"]["rows"] == 8
    assert report["finished"]
    table = (tmp_path / "check.md").read_text()
    assert "| bf16_train_step | timed out: stopped after its limit of 25 s |" in table
    assert "| bf16_evaluation | ok |" in table


@pytest.mark.extended
def test_a_failing_part_is_recorded_with_the_first_line_of_its_error(tmp_path):
    done = gpu_check(tmp_path, "--launch", "exec", "--parts", "bf16_train_step", env={"VOXTRAL_MAX_STEPS": "zero"})
    assert done.returncode == 1
    record = json.loads((tmp_path / "check.json").read_text())["parts"][0]
    assert record["status"] == "failed", record
    assert record["error"].startswith("ValueError: $VOXTRAL_MAX_STEPS='zero': expected a positive number"), record
    assert record["card"].startswith("CPU dry run") and record["transformers"] == installed("transformers")
    assert "Traceback" in (tmp_path / "logs" / "gpu_check_bf16_train_step.log").read_text()


def test_budget_limits_and_table_without_running_anything(tmp_path):
    from benchmarks import gpu_check

    assert [part.name for part in gpu_check.PARTS] == PARTS  # in order of value; a new part is one more entry
    assert sum(part.limit_s for part in gpu_check.PARTS) + gpu_check.PARENT_RESERVE_S <= gpu_check.BUDGET_S["gpu"] <= 8 * 60
    assert gpu_check.parse_limits(["t4_route=30"]) == {"t4_route": 30.0}
    with pytest.raises(Exception, match="PART=SECONDS"):
        gpu_check.parse_limits(["no_such_part=3"])
    report = {"dry_run": False, "date": "d", "budget_s": 480, "wall_s": 100, "finished": False, "parts": [
        {"part": "t4_route", "status": "ok", "limit_s": 240, "wall_s": 90, "card": "NVIDIA H100 80GB HBM3", "torch": "2.11",
         "transformers": "5.25.0", "headline": {"peak": "9.1 GiB of 15"}, "checks": {"language model in 4-bit": True}},
        {"part": "bf16_train_step", "status": "failed", "error": "OutOfMemoryError: CUDA out of memory", "limit_s": 120,
         "wall_s": 10, "checks": {"training losses finite": False}},
        {"part": "bf16_evaluation", "status": "running", "limit_s": 90}]}
    table = gpu_check.markdown(report)
    assert "NVIDIA H100 80GB HBM3; torch 2.11, transformers 5.25.0" in table and "so far" in table
    assert "| t4_route | ok | 90 (240) | peak 9.1 GiB of 15 |" in table
    assert ("| bf16_train_step | failed: OutOfMemoryError: CUDA out of memory | 10 (120) "
            "| FAILED: training losses finite |") in table
    assert "| bf16_evaluation | running | - (90) | - |" in table
    path = tmp_path / "r.json"
    gpu_check.write_json_atomically(path, report)
    assert json.loads(path.read_text()) == report and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_quantization_report_and_generation_flops_name_real_modules():
    """What the GPU run alone executes, on the CPU: the module names the 4-bit report reads, and the
    FLOPs a full-size answer is counted at."""
    import torch
    from transformers import VoxtralForConditionalGeneration

    from benchmarks import gpu_check, train_step
    from helpers.hardware import MODULES_KEPT_OUT_OF_4BIT
    from helpers.lora import add_lora

    config = gpu_check.tiny_module().tiny_config()
    torch.manual_seed(0)
    model = add_lora(VoxtralForConditionalGeneration(config))
    report = gpu_check.quantization_report(model)
    assert report == {"linear4bit_by_component": {}, "kept_out_dtypes": dict.fromkeys(MODULES_KEPT_OUT_OF_4BIT, "float32")}

    # one 30-s chunk, 440 prompt tokens, 16 new: the 0.64B tower over 1500 positions, ~3.2B language-model
    # weights over 456 positions and the 0.4B head over 16
    flops = gpu_check.generation_flops(train_step.full_size_config(), [(440, 1)], 16)
    assert 4.5e12 < flops < 5.5e12, flops
    assert gpu_check.generation_flops(train_step.full_size_config(), [(815, 2), (440, 1)], 16) > flops
