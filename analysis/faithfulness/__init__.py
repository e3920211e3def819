"""Faithfulness: which explanation of a pooled vector to trust.

Owns the run's settings (``config``), the explanation methods under test as a registry of rankers (``rankers``),
removing content tokens and the deletion and insertion curves (``perturbation``), the per-text records a killed
run resumes from (``records``), AOPC and its statistics (``statistics``), the run and ``report.json``
(``report``) and the CLI ``python -m analysis.faithfulness`` (``__main__``, which alone reads the committed
attention report for the peak layer); for a pair of texts, the curves of each (``pair_curves``), the methods
ranked against the random floor (``verdict``), and the Attribution page's background job that runs IG, token pairs
and curves (``job``; timed by ``python -m analysis.faithfulness.job_bench``).
May import: ``core``, ``analysis.attention``, ``analysis.attribution``, ``analysis.categories``, ``analysis.stats``,
``analysis.plots``.
"""

from __future__ import annotations

from analysis.faithfulness.config import METHODS, FaithfulnessConfig, peak_layer_from_report
from analysis.faithfulness.rankers import RANKERS, Ranker, register
from analysis.faithfulness.report import run_report, text_curves

__all__ = [
    "METHODS",
    "RANKERS",
    "FaithfulnessConfig",
    "Ranker",
    "peak_layer_from_report",
    "register",
    "run_report",
    "text_curves",
]
