"""Notebooks are stored clean: no outputs except the expected output of checked cells."""
from pathlib import Path

import nbformat
import pytest

from tools.rehearsal import CHECK_TAG

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SOLUTIONS = sorted((Path(__file__).parent.parent / "notebooks" / "solutions").glob("*.ipynb"))


def test_all_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["00_preflight", "01_explore_data", "02_build_collator", "03_train_lora",
                                          "04_inference", "05_pipeline"]


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_stored_without_outputs_except_checked_cells(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    checked = [c for c in code if CHECK_TAG in c.metadata.get("tags", [])]
    assert checked, "every notebook checks at least one deterministic output"
    for cell in code:
        if cell in checked:
            assert cell.execution_count is not None  # else nbval treats it as unrun and compares nothing
            assert cell.outputs, f"checked cell without expected output: {cell.source[:60]!r}"
            assert all(o.get("name") != "stderr" for o in cell.outputs)
        else:
            assert cell.outputs == [] and cell.execution_count is None, f"stored output in {cell.source[:60]!r}"
    assert "NBVAL_SKIP" not in "".join(c.source for c in code)
    assert "widgets" not in notebook.metadata and not any("execution" in c.metadata for c in notebook.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_open_with_badge_setup_and_versions(path):
    cells = nbformat.read(path, as_version=4).cells
    assert "colab.research.google.com" in cells[0].source and "**Goal:**" in cells[0].source
    assert '"google.colab" in sys.modules' in cells[2].source
    assert "environment_report(profile)" in cells[4].source
    assert not any("sys.path" in c.source for c in cells if c.cell_type == "code")


def test_every_notebook_opens_with_the_same_setup_and_versions_cells():
    openings = {path.stem: [c.source for c in nbformat.read(path, as_version=4).cells[1:5]] for path in NOTEBOOKS}
    assert len({tuple(cells) for cells in openings.values()}) == 1, "run tools/set_repository.py, or copy cells 1-4"


def test_every_lesson_has_a_solutions_notebook():
    assert [p.stem for p in SOLUTIONS] == [f"{p.stem}_solutions" for p in NOTEBOOKS if not p.stem.startswith("00")]


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=lambda p: p.stem)
def test_every_lesson_ends_with_a_summary_and_exercises_that_check_themselves(path):
    cells = nbformat.read(path, as_version=4).cells
    headings = [c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.strip()]
    assert "## Summary" in headings and "## Exercises" in headings
    assert headings.index("## Summary") < headings.index("## Exercises")
    after = cells[next(i for i, c in enumerate(cells) if c.source.startswith("## Exercises")):]
    checks = [c for c in after if c.cell_type == "code" and "exercises.check_" in c.source]
    assert 2 <= len(checks) <= 4, f"{len(checks)} exercise checks"
    for cell in checks:  # the placeholder gets the hint, proven by nbval on the stored output
        assert CHECK_TAG in cell.metadata.get("tags", [])
        assert "Not yet" in str(cell.outputs), cell.source


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_solution_passes_its_check(path):
    cells = nbformat.read(path, as_version=4).cells
    lesson = path.parent.parent / (path.stem.removesuffix("_solutions") + ".ipynb")
    assert [c.source for c in cells[1:5]] == [c.source for c in nbformat.read(lesson, as_version=4).cells[1:5]]
    checks = [c for c in cells if c.cell_type == "code" and "exercises.check_" in c.source]
    lesson_cells = nbformat.read(lesson, as_version=4).cells
    assert len(checks) == len([c for c in lesson_cells if c.cell_type == "code" and "exercises.check_" in c.source])
    for cell in checks:
        assert CHECK_TAG in cell.metadata.get("tags", []) and "Correct" in str(cell.outputs), cell.source


def test_the_times_quoted_are_the_measured_ones():
    """The README's table and the preflight quote how long each lesson ran in the tiny profile: the times
    tools/store_notebooks.py recorded when it last executed every notebook."""
    import json
    import re

    from tutorial_kit import preflight

    measured = json.loads((ROOT / "benchmarks" / "results" / "notebook_times.json").read_text())["seconds"]
    assert sorted(measured) == sorted(p.name for p in NOTEBOOKS)
    readme = (ROOT / "README.md").read_text()
    for name, seconds in measured.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| [{name.removesuffix('.ipynb')}]"))
        quoted = int(re.match(r"(\d+) s", row.split("|")[3].strip()).group(1))
        assert quoted == round(seconds), (name, quoted, seconds)
    assert preflight.TINY_NOTEBOOK_03_S == round(measured["03_train_lora.ipynb"])
