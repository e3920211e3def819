"""core.train and core.pairs on the real SmolLM2 and Bible pairs: a few short steps only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.encoding.encoder import Encoder
from core.pairs.build import build_pairs
from core.pairs.files import write_pairs
from core.training.config import TrainConfig
from core.training.trainer import Trainer

pytestmark = pytest.mark.integration


def test_short_training_on_bible_pairs_loads_back_in_the_encoder(tmp_path):
    pairs, report = build_pairs("bible", "bible", n=16)
    assert report.kept == 16 and pairs[0]["method"] == "bible"
    path = tmp_path / "bible.jsonl"
    write_pairs(path, pairs)
    config = TrainConfig.from_dict(
        {
            "pairs": str(path),
            "steps": 2,
            "batch_size": 4,
            "micro_batch_size": 4,
            "warmup_steps": 1,
            "max_length": 48,
            "lora_r": 8,
            "checkpoint_every": 1,
            "progress": False,
        }
    )
    out = tmp_path / "adapter"
    card = Trainer(config, out).train()
    assert np.isfinite(card["loss"]["last"]) and card["run"]["peak_rss_mb"] > 0
    meta = json.loads((out / "embedding_lens.json").read_text())
    assert meta["base_model"] == "smollm2-135m" and meta["pooling"] == "last"
    encoder = Encoder("smollm2-135m", adapter=out, cache=False, max_length=48)
    texts = [pairs[0]["anchor"], pairs[0]["positive"]]
    tuned, base = encoder.encode(texts, normalize=True), encoder.encode(texts, normalize=True, use_adapter=False)
    assert tuned.shape == (2, 576) and np.abs(tuned - base).max() > 1e-5


def test_smollm2_writes_paraphrases(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("The cat sat on the mat.\nWhat currency is used in Australia?\n")
    pairs, report = build_pairs("paraphrase", str(source), n=None, show_progress=False)
    assert report.kept + sum(report.dropped.values()) == 2
    for pair in pairs:
        assert pair["positive"].strip() and pair["positive"] != pair["anchor"] and pair["generator"] == "smollm2-135m"
