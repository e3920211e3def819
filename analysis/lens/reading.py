"""Reading written lens reports for the pages: where they are, their layer profiles restricted to chosen poolings
(the best layer re-marked among them), and a profile as a table and an array.

Reports are JSON (``report.json`` written by :func:`analysis.lens.report.run_report`); nothing is executed or
unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROFILE_MEASURES", "find_reports", "profile_array", "profile_table", "read_profiles", "restrict_profile"]

PROFILE_MEASURES = ("v_measure", "v_measure_std", "anisotropy", "effective_rank", "alignment", "uniformity")


def find_reports(folder: Path) -> dict[str, Path]:
    """``{sub-folder name: its report.json}`` for every sub-folder of ``folder`` holding one, sorted by name;
    empty when ``folder`` is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = (child / "report.json" for child in sorted(folder.iterdir()))
    return {path.parent.name: path for path in found if path.is_file()}


def read_profiles(report_file: Path) -> dict[str, dict[str, Any]]:
    """The layer profiles of a report, by task (empty when the file is unreadable or has none)."""
    try:
        report = json.loads(Path(report_file).read_text())
    except (OSError, ValueError):
        return {}
    profiles = report.get("profiles") if isinstance(report, dict) else None
    return profiles if isinstance(profiles, dict) else {}


def restrict_profile(profile: Mapping[str, Any], poolings: Sequence[str]) -> dict[str, Any]:
    """``profile`` with only ``poolings`` (those it has, in its order) and each variant's best (pooling, layer)
    re-marked among them by the same rule as :func:`analysis.lens.profile.layer_profile` (the first highest
    V-measure in pooling, then layer order); all poolings when none of ``poolings`` is in the profile."""
    kept = [p for p in profile["poolings"] if p in poolings] or list(profile["poolings"])
    variants: dict[str, Any] = {}
    for variant, section in profile["variants"].items():
        rows = {p: section["poolings"][p] for p in kept if p in section["poolings"]}
        best = None
        for pooling, measures in rows.items():
            for layer, (value, std) in enumerate(
                zip(measures.get("v_measure", []), measures.get("v_measure_std", []), strict=False)
            ):
                if value is not None and (best is None or value > best["v_measure"]):
                    best = {"pooling": pooling, "layer": profile["layers"][layer], "v_measure": value}
                    best["v_measure_std"] = std
        variants[variant] = {"poolings": rows, "best": best}
    return {**profile, "poolings": kept, "variants": variants}


def profile_table(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant, pooling and layer with every measure the profile has."""
    out = []
    for variant, section in profile["variants"].items():
        for pooling, measures in section["poolings"].items():
            for index, layer in enumerate(profile["layers"]):
                row: dict[str, Any] = {"variant": variant, "pooling": pooling, "layer": layer}
                row.update({m: measures[m][index] for m in PROFILE_MEASURES if m in measures})
                out.append(row)
    return out


def profile_array(profile: Mapping[str, Any], measure: str = "v_measure") -> np.ndarray:
    """``measure`` as a float array (variants, poolings, layers) in the profile's order; NaN where missing."""
    variants = list(profile["variants"])
    out = np.full((len(variants), len(profile["poolings"]), len(profile["layers"])), np.nan)
    for v, variant in enumerate(variants):
        for p, pooling in enumerate(profile["poolings"]):
            values = profile["variants"][variant]["poolings"].get(pooling, {}).get(measure)
            if values is not None:
                out[v, p, : len(values)] = [np.nan if x is None else x for x in values]
    return out
