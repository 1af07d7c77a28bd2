"""Execute the notebooks in the tiny profile and store them for git and nbval.

Every output is stripped, except those of cells tagged `nbval-check-output`: their expected
output (stdout and results, no stderr) stays so that nbval compares something real in CI.
Run after editing a notebook:  .venv/bin/python tools/store_notebooks.py

Run without arguments, it also records how long each lesson took to run, on this machine, in
benchmarks/results/notebook_times.json: the README's table and the preflight quote these times.
"""
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_TAG = "nbval-check-output"  # the cell tag nbval compares outputs for
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TIMES = ROOT / "benchmarks" / "results" / "notebook_times.json"


def store(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    notebook.metadata.pop("widgets", None)  # widget state would carry the audio players' data
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in every diff
        if cell.cell_type != "code":
            continue
        checked = CHECK_TAG in cell.metadata.get("tags", [])
        # nbval skips the comparison for a cell that looks unrun, so checked cells keep their count
        cell.execution_count = cell.execution_count if checked else None
        kept = []
        for output in cell.outputs if checked else []:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                continue
            kept.append(output)
        cell.outputs = kept
    nbformat.write(notebook, path)
    print(f"stored {path.name}")


if __name__ == "__main__":
    os.environ.setdefault("VOXTRAL_PROFILE", "tiny")
    lessons_and_solutions = [*sorted(NOTEBOOKS.glob("[0-9]*.ipynb")), *sorted(NOTEBOOKS.glob("solutions/*.ipynb"))]
    targets = [Path(p) for p in sys.argv[1:]] or lessons_and_solutions
    seconds = {}
    for target in targets:
        started = time.perf_counter()
        store(target.resolve())
        seconds[target.name] = round(time.perf_counter() - started, 1)
    if not sys.argv[1:]:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
        TIMES.write_text(json.dumps({
            "what": "wall time of each notebook, executed in the tiny profile by tools/store_notebooks.py (kernel start "
                    "included)", "cpu": cpu, "cores": os.cpu_count(), "load_average_after": os.getloadavg(),
            "seconds": {name: value for name, value in seconds.items() if not name.endswith("_solutions.ipynb")},
        }, indent=2) + "\n")
        print(f"times: {TIMES}")
