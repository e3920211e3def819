"""UMAP projections: shape, disk cache, keys (k-means labels: test_metrics; seeded samples: data/test_sampling)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.projections import UmapSettings, project_umap, projection_key


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    return np.concatenate([c + rng.normal(size=(20, 16)) for c in centres]).astype(np.float32)


def test_projection_is_cached_on_disk_and_reused(blobs, tmp_path, monkeypatch):
    points = project_umap(blobs, UmapSettings(n_neighbors=5), cache_dir=tmp_path)
    assert points.shape == (60, 2) and points.dtype == np.float32 and np.isfinite(points).all()
    assert len(list(tmp_path.glob("*.npy"))) == 1
    import umap

    monkeypatch.setattr(umap, "UMAP", None)  # a cache hit must not fit again
    again = project_umap(blobs, UmapSettings(n_neighbors=5), cache_dir=tmp_path)
    np.testing.assert_array_equal(points, again)


def test_key_follows_data_and_every_setting(blobs):
    base = projection_key(blobs, UmapSettings())
    assert projection_key(blobs.copy(), UmapSettings()) == base
    assert projection_key(blobs[:-1], UmapSettings()) != base
    for changed in (UmapSettings(n_neighbors=10), UmapSettings(min_dist=0.5), UmapSettings(seed=1)):
        assert projection_key(blobs, changed) != base


def test_a_corrupt_cache_file_is_recomputed(blobs, tmp_path):
    settings = UmapSettings(n_neighbors=5)
    path = tmp_path / f"{projection_key(blobs, settings)}.npy"
    path.write_bytes(b"not an npy file")
    assert project_umap(blobs, settings, cache_dir=tmp_path).shape == (60, 2)
    assert np.load(path, allow_pickle=False).shape == (60, 2)


def test_bad_settings_and_too_few_points_are_clear_errors(blobs, tmp_path):
    with pytest.raises(ValueError, match="at least 4 texts"):
        project_umap(blobs[:3], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="min_dist"):
        project_umap(blobs, UmapSettings(min_dist=2.0), cache_dir=tmp_path)


def test_scatter_highlights_the_same_texts_and_uses_distinct_colours(blobs):
    from analysis.plots import DISTINCT_COLORS, projection_scatter

    points = np.random.default_rng(0).normal(size=(6, 2))
    labels = ["a", "b", "a", "b", "c", "c"]
    figure = projection_scatter(points, [f"t{i}" for i in range(6)], labels, "x", highlight=[2, 5])
    by_name = {trace.name: trace for trace in figure.data}
    assert list(by_name["a"].selectedpoints) == [1] and list(by_name["c"].selectedpoints) == [1]
    assert list(by_name["b"].selectedpoints) == []
    assert len({trace.marker.color for trace in figure.data}) == 3 and len(set(DISTINCT_COLORS)) == len(DISTINCT_COLORS)
    assert projection_scatter(points, ["t"] * 6, labels, "x").data[0].selectedpoints is None
