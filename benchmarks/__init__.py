"""Measured comparisons with the published recipe: run them as modules, e.g. `python -m benchmarks.run`."""
