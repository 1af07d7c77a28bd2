"""Smoke tests: the benchmark scripts run on CPU and report numbers (speed is measured by
`make bench`, never asserted here)."""
from pathlib import Path

import pytest


def test_train_step_smoke_on_cpu():
    from benchmarks import train_step

    results = train_step.main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0"])
    names = [v["name"] for v in results["variants"]]
    assert names[0].startswith("published") and names[1].startswith("tuned")
    for variant in results["variants"]:
        assert variant["samples_per_s"] > 0, variant
    assert results["tuned_over_published"] > 0 and results["effective_batch"] == 16
    assert [v["micro_batch"] * (16 // v["micro_batch"]) for v in results["variants"]] == [16, 16]


def test_train_step_runs_clips_over_30_seconds():
    from benchmarks import train_step

    results = train_step.main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0",
                               "--variants", "batch4-checkpointing", "--chunks", "2"])
    assert results["audio_chunks"] == 2 and results["variants"][0]["samples_per_s"] > 0, results
    config = train_step.full_size_config()
    assert train_step.model_flops_per_sample(config, 2) > 1.5 * train_step.model_flops_per_sample(config, 1)


def test_tuned_step_computes_the_same_update_as_the_published_one():
    """Every labelled token has the same weight in both (3 per sample), so the mean loss over
    8 micro-batches of 2 equals the mean over one batch of 16: same gradients, same update."""
    import torch

    from benchmarks import train_step

    published = train_step.lora_weights_after_one_step(train_step.PUBLISHED)
    tuned = train_step.lora_weights_after_one_step(train_step.TUNED)
    assert published.keys() == tuned.keys() and len(published) > 0
    initial = train_step.build_model(True, train_step.TUNED, "cpu", torch.float32, lora_dropout=0.0)[0]
    moved = {n: p for n, p in initial.named_parameters() if p.requires_grad}
    assert any(not torch.equal(moved[n], tuned[n]) for n in tuned)  # the step did something
    for name in published:
        torch.testing.assert_close(published[name], tuned[name], rtol=1e-4, atol=1e-6)


def test_train_step_flops_count_is_plausible_for_the_full_model():
    from benchmarks import train_step

    flops = train_step.model_flops_per_sample(train_step.full_size_config())
    # ~3.64B language-model parameters (head included) x 438 tokens x 4 (forward, and backward
    # for activations only: frozen weights), plus the 0.64B tower's forward over 1500 positions
    assert 7.9e12 < flops < 8.7e12


def test_bench_markdown_marks_gpu_rows_unmeasured():
    from benchmarks import run

    results = {"date": "d", "machine": {"cpu": "c", "cores": 2, "torch": "t"},
               "data_pipeline": {"rows": 1, "baseline": 1, "baseline_per_epoch": [1], "ours": 3, "ours_per_epoch": [3],
                                 "ratio": 3.0, "identical_features": True},
               "evaluation": {"rows": 1, "baseline": 1, "ours": 2, "batch_size": 16, "ratio": 2.0, "identical_predictions": True},
               "train_step_cpu_tiny": {"variants": []}}
    table = run.markdown(results)
    assert "| 3.0x | True |" in table and table.count("not yet measured") == 4


def test_bench_markdown_shows_recorded_gpu_results():
    from benchmarks import run

    recorded = run.gpu_results()
    assert set(recorded) == {"train_step_gpu", "evaluation_gpu"}  # committed from the H100 run
    rows = "\n".join(run.gpu_rows(recorded["train_step_gpu"], recorded["evaluation_gpu"]))
    assert "not yet measured" not in rows and rows.count("NVIDIA H100") == 3
    assert f"| {recorded['train_step_gpu']['tuned_over_published']}x |" in rows


def test_evaluation_benchmark_rows_survive_the_file_round_trip(tmp_path):
    import numpy as np

    from benchmarks import evaluation_full_size as bench

    rows = [{"audio": {"array": np.full(n, i / 10, np.float32), "sampling_rate": 16000}, "category": c, "official_answer": a}
            for i, (n, c, a) in enumerate([(16000, "navigate", "Yes"), (24000, "object_counting", 7)])]
    bench.save_rows(rows, tmp_path / "rows.npz")
    loaded = bench.load_rows(tmp_path / "rows.npz")
    assert [(len(r["audio"]["array"]), r["category"], r["official_answer"]) for r in loaded] == [
        (16000, "navigate", "Yes"), (24000, "object_counting", "7")]
    assert np.array_equal(loaded[1]["audio"]["array"], rows[1]["audio"]["array"])


def test_evaluation_benchmark_smoke_on_cpu(tmp_path):
    import json

    from benchmarks import evaluation_full_size as bench

    results = bench.main(["--device", "cpu", "--tiny", "--count", "4", "--max-new-tokens", "3",
                          "--json", str(tmp_path / "e.json")])
    measured = results["float32"]
    assert measured["rows"] == 4 and measured["baseline"] > 0 and measured["ours"] > 0
    assert results["identical_predictions_float32"] and measured["same_predictions"] == 4
    assert json.loads((tmp_path / "e.json").read_text())["tiny"] is True


@pytest.mark.parametrize("needle", ["trust_remote_code=True", ".bin\"", "print(hub_token", "print(token"])
def test_no_remote_code_no_pickles_no_token_printing(needle):
    root = Path(__file__).parent.parent
    sources = list((root / "helpers").glob("*.py")) + list((root / "notebooks").glob("*.ipynb"))
    assert not [p.name for p in sources if needle in p.read_text()]
