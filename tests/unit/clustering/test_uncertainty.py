"""Uncertainty over texts: bootstrap replicates, paired differences, the scale-free gap, the silhouette, and the
quality table's uncertainty columns, on constructed data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import v_measure_score

from analysis.clustering import filter_rows, quality_view, summary_tables
from analysis.clustering.summary_uncertainty import (
    BY_SEEDS,
    BY_TEXTS,
    paired_difference,
    row_replicates,
    uncertainty_view,
)
from analysis.clustering.uncertainty import (
    cosine_gaps,
    per_text_gaps,
    silhouette_ci,
    text_uncertainty,
    v_measure_replicates,
)
from analysis.stats import mean_ci, replicate_ci, text_resamples
from core.runtime.errors import ConfigError


def blobs(n_per: int, k: int, separation: float, seed: int = 0, dim: int = 16) -> tuple[np.ndarray, list[str]]:
    """``k`` labelled Gaussian blobs around orthogonal directions, ``separation`` apart relative to unit noise."""
    rng = np.random.default_rng(seed)
    labels = [f"l{i}" for i in range(k) for _ in range(n_per)]
    centres = np.eye(dim)[:k] * separation
    vectors = np.repeat(centres, n_per, axis=0) + rng.normal(size=(k * n_per, dim))
    return vectors, labels


def test_text_resamples_are_deterministic_draw_counts():
    counts = text_resamples(30, 50, seed=3)
    assert counts.shape == (50, 30) and (counts.sum(1) == 30).all()
    assert (counts == text_resamples(30, 50, seed=3)).all()
    assert not (counts == text_resamples(30, 50, seed=4)).all()
    with pytest.raises(ConfigError, match="at least 2 texts"):
        text_resamples(1)


def test_resamples_kept_between_calls_are_the_seeds_own_draws():
    fresh = np.random.default_rng(5).multinomial(40, np.full(40, 1 / 40), size=30)
    for _ in range(2):  # the second call is served from the kept draw
        counts = text_resamples(40, 30, seed=5)
        assert counts.dtype == np.int64 and (counts == fresh).all()
        counts[0, 0] += 1  # a caller's own copy: changing it changes no later statistic
    values = np.random.default_rng(6).normal(size=40)
    assert mean_ci(values, n_boot=30, seed=5)["ci_low"] == pytest.approx(np.quantile(fresh @ values / 40, 0.025))


def test_v_measure_replicates_equal_sklearn_on_the_resampled_texts():
    rng = np.random.default_rng(1)
    labels, clusters = rng.integers(0, 4, 120), rng.integers(0, 5, 120)
    counts = text_resamples(120, 6, seed=0)
    replicates = v_measure_replicates(labels, [clusters], counts)
    for row, draws in zip(replicates, counts, strict=True):
        drawn = np.repeat(np.arange(120), draws)
        assert row == pytest.approx(v_measure_score(labels[drawn], clusters[drawn]), abs=1e-12)
    whole = v_measure_replicates(labels, [clusters, clusters[::-1]], np.ones((1, 120)))[0]
    expected = (v_measure_score(labels, clusters) + v_measure_score(labels, clusters[::-1])) / 2
    assert whole == pytest.approx(expected, abs=1e-12)  # the mean over seeds


def test_the_ci_over_texts_narrows_with_more_texts_and_covers_the_score():
    widths = []
    for n_per in (10, 160):
        vectors, labels = blobs(n_per, 3, 2.0)
        stored = text_uncertainty(vectors, labels, seeds=(42, 43))
        low, high = replicate_ci(stored["v_measure"])
        assert stored["n"] == 3 * n_per and len(stored["v_measure"]) == stored["n_boot"]
        assert low <= np.mean(stored["v_measure"]) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # 16x the texts: about a quarter of the width


def test_a_paired_difference_is_sharper_than_the_two_rows_cis_and_excludes_zero_for_a_real_gain():
    vectors, labels = blobs(60, 3, 1.5, seed=2)
    better = vectors.copy()
    better[:, :3] *= 1.6  # the same texts, labels further apart
    cells = []
    for data in (vectors, better):
        stored = text_uncertainty(data, labels, seeds=(42,))
        cells.append({"task": {"name": "t", "texts": 180, "sample_sha256": "s"}, "scores": {}, "uncertainty": stored})
    base, adapter = row_replicates([cells[0]]), row_replicates([cells[1]])
    low, high = paired_difference(adapter, base)
    assert low > 0  # the gain is real
    base_ci, adapter_ci = replicate_ci(base.v_measure), replicate_ci(adapter.v_measure)
    assert high - low < (base_ci[1] - base_ci[0]) + (adapter_ci[1] - adapter_ci[0])
    other = dict(cells[0], task={"name": "t", "texts": 180, "sample_sha256": "other texts"})
    assert paired_difference(adapter, row_replicates([other])) is None  # different texts never pair


def test_the_auc_gap_is_invariant_to_a_monotone_rescale_and_the_raw_gap_is_not():
    vectors, labels = blobs(20, 3, 1.0, seed=4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    plain = cosine_gaps(None, labels, similarity=cos)
    squashed = cosine_gaps(None, labels, similarity=0.3 + 0.5 * np.tanh(2 * cos))  # increasing, not linear
    linear = cosine_gaps(None, labels, similarity=0.4 + 0.5 * cos)
    assert squashed["auc"]["value"] == pytest.approx(plain["auc"]["value"], abs=1e-12)
    assert linear["gap_z"]["value"] == pytest.approx(plain["gap_z"]["value"], rel=1e-9)
    assert linear["gap"]["value"] == pytest.approx(0.5 * plain["gap"]["value"], rel=1e-9)  # cosine-scale bound
    assert 0.5 < plain["auc"]["value"] <= 1.0


def test_per_text_gaps_on_a_constructed_similarity():
    labels = ["a", "a", "b", "b"]
    similarity = np.array([[1, 0.9, 0.1, 0.5], [0.9, 1, 0.2, 0.95], [0.1, 0.2, 1, 0.3], [0.5, 0.95, 0.3, 1]])
    values, _ = per_text_gaps(None, labels, similarity)
    assert values["gap"][0] == pytest.approx(0.9 - (0.1 + 0.5) / 2)
    assert values["auc"][0] == 1.0  # its same-label text is nearer than both others
    assert values["auc"][1] == 0.5  # 0.9 beats 0.2 but not 0.95
    with pytest.raises(ConfigError, match="different labels"):
        per_text_gaps(None, ["a"] * 4, similarity)


def test_silhouette_ci_on_constructed_clusters():
    tight, labels = blobs(30, 3, 12.0, seed=5)
    noise = np.random.default_rng(6).normal(size=tight.shape)
    high = silhouette_ci(tight, labels, n_boot=300)
    low = silhouette_ci(noise, labels, n_boot=300)
    assert high["mean"] > 0.6 and abs(low["mean"]) < 0.1
    assert high["ci_low"] <= high["mean"] <= high["ci_high"] and high["n"] == high["of"] == 90
    sampled = silhouette_ci(tight, labels, n_boot=50, max_texts=40)
    assert sampled["n"] == 40 and sampled["of"] == 90
    with pytest.raises(ConfigError, match="2 to"):
        silhouette_ci(tight, ["one"] * 90)


def test_mean_ci_resamples_texts():
    result = mean_ci(np.arange(100, dtype=float), n_boot=500)
    assert result["mean"] == 49.5 and result["ci_low"] < 49.5 < result["ci_high"] and result["n"] == 100


def grid_cell(variant: str, task: str, v: float, uncertainty: dict | None, sample: str = "s") -> dict:
    cell = {
        "variant": variant,
        "prompt": {"name": "eol", "template": "{text}"},
        "pooling": "mean",
        "layer": "-1",
        "max_length": 64,
        "task": {"name": task, "texts": 90, "clusters": 3, "sample_sha256": f"{sample}-{task}"},
        "kmeans": {"seeds": [42, 43]},
        "scores": {"v_measure": v, "v_measure_std": 0.01, "v_measure_per_seed": [v - 0.01, v + 0.01]},
    }
    if uncertainty is not None:
        cell["uncertainty"] = uncertainty
    return cell


def test_the_quality_table_shows_ci_n_spread_and_noise_flags():
    cells, tasks = [], ("r8", "trec-coarse")
    for task_seed, task in enumerate(tasks):
        vectors, labels = blobs(30, 3, 1.5, seed=10 + task_seed)
        better = vectors.copy()
        better[:, :3] *= 3.0
        for variant, data in (("m", vectors), ("m+a", better)):
            stored = text_uncertainty(data, labels, seeds=(42, 43))
            cells.append(grid_cell(variant, task, float(np.mean(stored["v_measure"])), stored))
        cells.append(grid_cell("minilm", task, 0.05, None))  # an old cell: seed spread only
    scores, _ = summary_tables(cells)
    view = quality_view(scores, filter_rows(scores))
    table = uncertainty_view(view, cells, list(tasks)).set_index("variant")
    assert table.loc["m+a", "spread"] == BY_TEXTS and table.loc["minilm", "spread"] == BY_SEEDS
    assert (table["n texts"] == 180).all()
    assert "±" in table.loc["m", "average ±"] and "±" in table.loc["m+a", "vs base ±"]
    assert table.loc["m", "vs base ±"] == ""  # a base row has no base
    gain = float(table.loc["m+a", "vs base ±"].split(" ± ")[0])
    assert gain == pytest.approx(table.loc["m+a", "vs base"], abs=0.02)
    assert table.loc["m+a", "within noise of best"]  # the best row
    assert not table.loc["minilm", "within noise of best"]  # far below, seed spread tiny
    assert 0.5 < table.loc["m+a", "gap AUC"] <= 1 and table.loc["minilm", "gap AUC ±"] == ""
    assert math.isnan(table.loc["minilm", "gap"])


def test_a_shifted_bootstrap_keeps_its_width_centred_on_the_estimate():
    from analysis.stats import centred_ci

    replicates = np.random.default_rng(0).normal(0.30, 0.01, 4000)  # resampling raised the statistic by 0.05
    low, high = centred_ci(0.25, replicates)
    assert (low + high) / 2 == pytest.approx(0.25) and high - low == pytest.approx(0.0392, abs=0.002)
    assert replicate_ci(replicates)[0] > 0.25  # the percentile interval misses the estimate


@pytest.mark.slow
def test_a_grid_run_stores_replicates_that_pair_base_and_adapter(tiny_model_dir, tmp_path):
    import json

    from peft import LoraConfig, get_peft_model

    from core.models.registry import load_model
    from tests.unit.clustering.test_clustering import _with_models, cell_files, cli, main, synthetic_rows, write_csv

    adapter_dir = tmp_path / "adapter"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(str(tiny_model_dir)).model, lora).save_pretrained(adapter_dir)
    csv = write_csv(tmp_path / "topics.csv", synthetic_rows())
    out = tmp_path / "grid"
    assert main(_with_models(cli(tiny_model_dir, str(csv), out), f"{tiny_model_dir}+{adapter_dir}")) == 0
    cells = [json.loads(path.read_text()) for path in cell_files(out)]
    assert cells and all(cell["uncertainty"]["n"] == cell["task"]["texts"] for cell in cells)
    assert all(len(cell["uncertainty"]["v_measure"]) == cell["uncertainty"]["n_boot"] for cell in cells)
    scores, _ = summary_tables(cells)
    tasks = [c for c in scores.columns if c != "average"]
    table = uncertainty_view(quality_view(scores, filter_rows(scores)), cells, tasks)
    adapters = table[table["role"] == "adapter"]
    assert len(adapters) and all(" ± " in value for value in adapters["vs base ±"])  # the rows pair over texts
    assert (table["spread"] == BY_TEXTS).all()
