"""Execute the notebooks in the tiny profile and store them for git and nbval.

Every output is stripped, except those of cells tagged `nbval-check-output`: their expected
output (stdout and results, no stderr) stays so that nbval compares something real in CI.
Run after editing a notebook:  .venv/bin/python tools/store_notebooks.py
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_TAG = "nbval-check-output"  # the cell tag nbval compares outputs for
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


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
    for target in targets:
        store(target.resolve())
