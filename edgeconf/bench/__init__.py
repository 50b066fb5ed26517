"""The cost benchmark: the paper's protocol (cascade vs baseline, duplicates, memo configurations, energy)
and its Markdown/plot report.

It builds on the cascade runtime (``edgeconf``) and ``edgeconf.devices``; the runtime never imports it.
Its command-line verb (``bench``) lives in :mod:`edgeconf.bench.cli`, mounted by the root CLI by name.
"""
from __future__ import annotations

from edgeconf.bench.benchmark import BenchSettings, RunResult, run_bench

__all__ = ["BenchSettings", "RunResult", "run_bench"]
