"""The lens report end to end on the tiny model and adapter: per-layer vectors, resumability, contents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.lens.corpus import emergence_layer
from analysis.lens.inputs import encode_layers, layer_combos, load_stage, save_stage
from analysis.lens.report import LensConfig, run_report
from core.runtime.errors import ConfigError
from tests.conftest import english_like_sentences

TOPICS = ("river", "market", "engine")


def write_task(folder: Path, n: int = 24) -> Path:
    """A labelled CSV whose texts differ by a topic word (so clustering has something to find)."""
    rows = ["text,label"]
    for index, sentence in enumerate(english_like_sentences(n, seed=3)):
        topic = TOPICS[index % len(TOPICS)]
        rows.append(f'"{sentence.replace(chr(34), "")} {topic} {topic}",{topic}')
    path = folder / "task.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_config(tiny_model_dir, tiny_adapter_dir, tmp_path, **changes) -> LensConfig:
    values = dict(
        adapter=str(tiny_adapter_dir), model=str(tiny_model_dir), tasks=(str(write_task(tmp_path)),), n=24,
        pairs=0, kmeans_seeds=2, n_boot=50, geometry_boot=20, attention=False, figures=False,
        out=str(tmp_path / "out"), prompt="eol", pooling="last", device="cpu",
    )  # fmt: skip
    values.update(changes)
    return LensConfig(**values)


def test_per_layer_vectors_equal_single_layer_encodes(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", pooling="last")
    states = encoder.num_hidden_states
    grid = encode_layers(encoder, sample_texts[:5], layer_combos(("last", "mean"), states), (False,))
    for pooling in ("last", "mean"):
        for index in range(states):
            alone = encoder.encode(sample_texts[:5], pooling=pooling, layer=index)
            np.testing.assert_allclose(grid["base"][(pooling, index)], alone, rtol=1e-5, atol=1e-5)


def test_stage_files_round_trip_and_refuse_another_key(tmp_path):
    grid = {"base": {("last", 0): np.ones((2, 3), np.float32)}, "adapter": {("mean", 4): np.zeros((2, 3))}}
    path = tmp_path / "stage.npz"
    save_stage(path, "k1", grid)
    loaded = load_stage(path, "k1")
    np.testing.assert_array_equal(loaded["base"][("last", 0)], grid["base"][("last", 0)])
    assert set(loaded["adapter"]) == {("mean", 4)}
    assert load_stage(path, "k2") is None
    path.write_bytes(b"not an npz")
    assert load_stage(path, "k1") is None


def test_emergence_layer_on_constructed_tops():
    top1 = np.array([[5, 7, 7, 7], [7, 7, 5, 7], [1, 2, 3, 4], [9, 9, 9, 9]])
    np.testing.assert_array_equal(emergence_layer(top1, [0, 1, 2, 3]), [1, 3, 3, 0])


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="--adapter"):
        LensConfig()
    with pytest.raises(ConfigError, match="pooling"):
        LensConfig(model="m", poolings=("attention",))
    with pytest.raises(ConfigError, match="at least 10"):
        LensConfig(model="m", n=3)


@pytest.mark.slow
def test_report_on_the_tiny_model(tiny_model_dir, tiny_adapter_dir, tmp_path, monkeypatch):
    config = tiny_config(tiny_model_dir, tiny_adapter_dir, tmp_path)
    report = run_report(config)
    folder = Path(config.out) / config.name
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["settings"]["n"] == 24 and not (folder / ".work").exists()
    lens = on_disk["lens"]
    layers = lens["layers"]
    assert layers == list(range(len(layers)))
    for view in ("raw", "pc_removed"):
        for variant in ("base", "adapter"):
            rate = lens["views"][view][variant]["hit_rate"]
            assert len(rate["mean"]) == len(layers)
            assert all(lo <= m <= hi for lo, m, hi in zip(rate["ci_low"], rate["mean"], rate["ci_high"], strict=True))
        assert "difference" in lens["views"][view]
    profile = on_disk["profiles"][config.tasks[0]]
    best = profile["variants"]["adapter"]["best"]
    assert best["v_measure"] == max(
        v for rows in profile["variants"]["adapter"]["poolings"].values() for v in rows["v_measure"]
    )
    cka = on_disk["geometry"]["cka_per_layer"]["value"]
    assert all(v is None or -1e-9 <= v <= 1 + 1e-9 for v in cka) and cka[-1] < 0.9999  # the adapter moved it
    with np.load(folder / "arrays.npz") as arrays:
        assert arrays["adapter/raw/hit_rate"].shape == (24, len(layers))
        assert arrays["base/components"].shape[0] == len(layers)
    assert report["timings_seconds"]["total"] > 0

    # An interrupted run leaves its stage files; the next run resumes from them: no forward pass runs.
    import analysis.lens.report as module

    monkeypatch.setattr(module.shutil, "rmtree", lambda *a, **k: None)
    run_report(config)
    assert (folder / ".work").is_dir()
    monkeypatch.setattr(module, "encode_layers", lambda *a, **k: pytest.fail("re-encoded"))
    again = run_report(config)
    assert again["lens"]["views"]["raw"]["adapter"]["hit_rate"] == report["lens"]["views"]["raw"]["adapter"]["hit_rate"]


def test_geometry_intervals_hold_their_values():
    from analysis.lens.profile import fine_tuning_geometry

    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16))
    grid = {"base": {("last", 0): base, ("last", 1): base},
            "adapter": {("last", 0): base, ("last", 1): base + 0.5 * rng.normal(size=(30, 16))}}  # fmt: skip
    pairs = rng.normal(size=(20, 16))
    pair_grid = {"base": {("last", 1): pairs}, "adapter": {("last", 1): pairs + 0.3 * rng.normal(size=(20, 16))}}
    geometry = fine_tuning_geometry(grid, pair_grid, ("last", 1), 2, n_boot=40)
    for measure in ("alignment", "uniformity", "anisotropy", "effective_rank", "pc_share"):
        for side in ("base", "adapter", "difference"):
            entry = geometry[measure][side]
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], (measure, side, entry)
    cka = geometry["cka_per_layer"]
    assert cka["value"][0] == pytest.approx(1.0)
    assert cka["ci_low"][1] <= cka["value"][1] <= cka["ci_high"][1]
