"""Repo-wide pytest hooks: a per-file time summary at the end of every run."""
from collections import defaultdict

_seconds_per_file = defaultdict(float)


def pytest_runtest_logreport(report):
    _seconds_per_file[report.location[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds_per_file:
        return
    terminalreporter.section("time per test file")
    for path, seconds in sorted(_seconds_per_file.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
    terminalreporter.write_line(f"{sum(_seconds_per_file.values()):8.1f} s  total")
