"""How rows are named in error messages, everywhere: "sample <id>" (or its position when it has no id).

Used by every error message about a row.
"""
from __future__ import annotations


def row_id(row, position: int):
    """A row's identifier: its dataset `id` when it has one, else its position."""
    return row.get("id", position) if isinstance(row, dict) else position


def sample_name(row: dict | None = None, index=None) -> str:
    """How every error message names a row: by its dataset `id` when it has one, else by its
    position (`index`), e.g. "sample 17"."""
    if isinstance(row, dict) and row.get("id") is not None:
        return f"sample {row['id']}"
    return "sample" if index is None else f"sample {index}"
