"""Point the tutorial at a repository (a fork) and a branch: one command, every link.

    python tools/set_repository.py OWNER/NAME [--ref BRANCH]

Rewrites `[project.urls] Repository` and `[tool.voxtral-tutorial] ref` in pyproject.toml, the Colab
badges in the README and the notebooks, and the notebooks' setup cell (the same cell in every
notebook and solutions notebook, written from SETUP_CELL below). Without arguments it rewrites
everything from pyproject.toml's values, which is how an edited SETUP_CELL reaches the notebooks.
"""
import argparse
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))

SETUP_CELL = '''\
# Colab only: install this tutorial's `helpers` and what it needs (elsewhere `make tutorial` did).
import os, subprocess, sys

REPOSITORY, REF = "{repository}", "{ref}"
if "google.colab" in sys.modules:
    source = os.environ.get("VOXTRAL_TUTORIAL_SOURCE") or f"git+https://github.com/{{REPOSITORY}}@{{REF}}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    f"voxtral-tutorial-helpers @ {{source}}"], check=True)
    from tutorial_kit.colab import setup

    setup(source)'''


def current() -> tuple[str, str]:
    text = PYPROJECT.read_text()
    repository = re.search(r'Repository = "https://github.com/([^"]+)"', text).group(1)
    ref = re.search(r'^ref = "([^"]+)"', text, re.M).group(1)
    return repository, ref


def badge_links(text: str, repository: str, ref: str) -> str:
    return re.sub(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/",
                  f"colab.research.google.com/github/{repository}/blob/{ref}/", text)


def rewrite(repository: str, ref: str) -> None:
    text = PYPROJECT.read_text()
    text = re.sub(r'Repository = "https://github.com/[^"]+"', f'Repository = "https://github.com/{repository}"', text)
    PYPROJECT.write_text(re.sub(r'^ref = "[^"]+"', f'ref = "{ref}"', text, flags=re.M))
    readme = ROOT / "README.md"
    readme.write_text(badge_links(readme.read_text(), repository, ref))
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = badge_links(cell.source, repository, ref)
            elif '"google.colab" in sys.modules' in cell.source and "pip" in cell.source:
                cell.source = SETUP_CELL.format(repository=repository, ref=ref)
        nbformat.write(notebook, path)
    print(f"Links and setup cells now point at github.com/{repository} ({ref}).")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", nargs="?", help="OWNER/NAME on GitHub (default: pyproject.toml's)")
    parser.add_argument("--ref", help="branch or tag the notebooks install from (default: pyproject.toml's)")
    arguments = parser.parse_args()
    repository, ref = current()
    rewrite(arguments.repository or repository, arguments.ref or ref)
