"""The `full` profile end to end, on a CPU: the five notebooks against local stand-ins laid out like
the two Hub repos (sharded legacy weights, `preprocessor_config.json` only, 1000 rows of 22.05 kHz
MP3 with clips over 30 s). Only VOXTRAL_MODEL, VOXTRAL_DATASET and VOXTRAL_MAX_STEPS differ from a
learner's run; every checked cell must print what tests/expected/full_profile_small_standin.json says."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.extended
def test_full_profile_runs_every_notebook_against_hub_layout_standins(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "rehearsal.py"), "--size", "small", "--check",
         "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "rehearsal.json")],
        capture_output=True, text=True, cwd=ROOT)
    print(result.stdout[-6000:], result.stderr[-6000:])
    assert result.returncode == 0, "the full-profile rehearsal failed (see the output above)"
    report = json.loads((tmp_path / "rehearsal.json").read_text())
    assert [n["notebook"] for n in report["notebooks"]] == sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert report["training"]["steps"] == report["max_steps"]
    adapter = tmp_path / "work" / "outputs" / "full" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"].endswith("Voxtral-Mini-3B-2507")  # the stand-in, as a learner's snapshot
