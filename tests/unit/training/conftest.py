"""Fixtures of the training tests: the tiny model's folder and a file of 40 distinct pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.unit.training.common import WORDS


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_dir) -> Path:
    return Path(tiny_model_dir)


@pytest.fixture(scope="session")
def pair_file(tmp_path_factory) -> Path:
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines = []
    for i in range(40):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        positive = words[:]
        rng.shuffle(positive)
        if positive == words:  # an anchor equal to its positive would be dropped as a trivial pair
            positive.append("too")
        lines.append(json.dumps({"anchor": " ".join(words), "positive": " ".join(positive), "source": "t", "id": i}))
    path.write_text("\n".join(lines) + "\n")
    return path
