"""How long the lessons' sentences are: the median and the longest, in words, of every markdown cell.

    .venv/bin/python tools/sentence_lengths.py [notebooks/0*.ipynb ...]

Code spans, LaTeX, links' targets, HTML tags, headings and list markers are left out of the count;
a sentence ends at . ! or ? followed by a space or a line end.
"""
import re
import statistics
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def sentences(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " X ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " X ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\n(?=[ \t]*(#+|[-*]|\d+\.)\s)", "\n\n", text)  # a heading or list item stands alone
    text = re.sub(r"^[ \t]*(#+|[-*]|\d+\.|>)[ \t]*", " ", text, flags=re.M)
    parts = re.split(r"(?<=[.!?])\s+|\n\s*\n", text)
    return [p.strip() for p in parts if len(p.split()) >= 3]


def measure(path: Path) -> tuple[int, float, int]:
    notebook = nbformat.read(path, as_version=4)
    lengths = [len(s.split()) for c in notebook.cells if c.cell_type == "markdown" for s in sentences(c.source)]
    return len(lengths), statistics.median(lengths), max(lengths)


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    print(f"{'notebook':<28} sentences  median  longest")
    for path in paths:
        count, median, longest = measure(path)
        print(f"{path.name:<28} {count:9d}  {median:6.1f}  {longest:7d}")
