"""The mteb protocol lives beside the mteb tasks: MtebEncoder wraps an Encoder; core loads no mteb."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from analysis.clustering.mteb_encoder import MtebEncoder
from analysis.clustering.mteb_tasks import local_clustering_task
from core.data import Dataset
from core.runtime.paths import REPO_ROOT


def loader(texts: list[str], batch_size: int = 3) -> DataLoader:
    return DataLoader(
        [{"text": text} for text in texts],
        batch_size=batch_size,
        collate_fn=lambda rows: {"text": [row["text"] for row in rows]},
    )


def test_mteb_dataloader_call_returns_the_plain_vectors(tiny_encoder, sample_texts):
    via_mteb = MtebEncoder(tiny_encoder).encode(
        loader(sample_texts), task_metadata=None, hf_split="test", hf_subset="default", batch_size=2
    )
    plain = tiny_encoder.encode(sample_texts)
    assert via_mteb.dtype == np.float32 and via_mteb.shape == plain.shape
    assert np.abs(via_mteb - plain).max() == 0.0


def test_mteb_dataloader_with_a_blank_text_names_it(tiny_encoder):
    with pytest.raises(ValueError, match="Text 1"):
        MtebEncoder(tiny_encoder).encode(
            loader(["a", " "], batch_size=1), task_metadata=None, hf_split="test", hf_subset="default"
        )


def test_mteb_model_meta_describes_the_model(tiny_encoder):
    meta = MtebEncoder(tiny_encoder).mteb_model_meta
    assert meta.embed_dim == 32 and meta.max_tokens == 512
    assert meta.revision == tiny_encoder.loaded.weights_hash[:12]


def test_mteb_evaluate_runs_the_wrapped_encoder_on_a_local_task(tiny_encoder):
    import mteb

    texts = [f"{word} number {i}" for i, word in enumerate(["dog", "cat", "car", "bus"] * 6)]
    labels = ["animal" if t.startswith(("dog", "cat")) else "vehicle" for t in texts]
    task = local_clustering_task(Dataset("toy", texts, labels, "x", "test"))
    result = mteb.evaluate(MtebEncoder(tiny_encoder), task, cache=None)
    assert 0.0 <= result.task_results[0].get_score() <= 1.0


@pytest.mark.parametrize(
    "module", ["core.encoding.encoder", "core.training.trainer", "analysis.clustering", "analysis.projections"]
)
def test_importing_loads_no_mteb(module):
    code = f"import sys, {module}; print('mteb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mteb_calls_are_served_under_the_given_setting(tiny_encoder, sample_texts):
    from core.encoding.setting import EmbeddingSetting

    setting = EmbeddingSetting(prompt="summarize", pooling="mean", layer="last2", max_length=64)
    wrapped = MtebEncoder(tiny_encoder, setting)
    assert wrapped.setting == setting and tiny_encoder.setting == EmbeddingSetting()  # the encoder is unchanged
    assert wrapped.mteb_model_meta.max_tokens == 64
    via_mteb = wrapped.encode(loader(sample_texts), task_metadata=None, hf_split="test", hf_subset="default")
    assert np.abs(via_mteb - tiny_encoder.with_setting(setting).encode(sample_texts)).max() == 0.0
    assert np.abs(via_mteb - tiny_encoder.encode(sample_texts)).max() > 1e-3
