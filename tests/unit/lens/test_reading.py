"""Reading written lens reports: finding them, restricting a profile to poolings (best re-marked), table, array."""

from __future__ import annotations

import json

import numpy as np

from analysis.lens.reading import find_reports, profile_array, profile_table, read_profiles, restrict_profile

PROFILE = {
    "task": "t",
    "layers": [0, 1, 2],
    "poolings": ["last", "mean"],
    "variants": {
        "base": {
            "poolings": {
                "last": {"v_measure": [0.1, 0.5, 0.2], "v_measure_std": [0.0, 0.01, 0.0], "anisotropy": [1, 2, 3]},
                "mean": {"v_measure": [0.3, 0.4, 0.45], "v_measure_std": [0.0, 0.0, 0.02], "anisotropy": [4, 5, 6]},
            },
            "best": {"pooling": "last", "layer": 1, "v_measure": 0.5, "v_measure_std": 0.01},
        },
        "adapter": {
            "poolings": {
                "last": {"v_measure": [0.1, 0.2, 0.6], "v_measure_std": [0.0, 0.0, 0.03], "anisotropy": [1, 2, 3]},
                "mean": {"v_measure": [0.3, 0.6, 0.1], "v_measure_std": [0.0, 0.04, 0.0], "anisotropy": [4, 5, 6]},
            },
            "best": {"pooling": "last", "layer": 2, "v_measure": 0.6, "v_measure_std": 0.03},
        },
    },
}


def test_restricting_poolings_re_marks_the_best_layer():
    mean_only = restrict_profile(PROFILE, ["mean"])
    assert mean_only["poolings"] == ["mean"] and set(mean_only["variants"]["base"]["poolings"]) == {"mean"}
    assert mean_only["variants"]["base"]["best"] == {"pooling": "mean", "layer": 2, "v_measure": 0.45,
                                                     "v_measure_std": 0.02}  # fmt: skip
    everything = restrict_profile(PROFILE, ["last", "mean"])
    for variant in ("base", "adapter"):  # the same rule as the profile's own: the first highest wins ties
        assert everything["variants"][variant]["best"] == PROFILE["variants"][variant]["best"]
    assert restrict_profile(PROFILE, ["no-such"])["poolings"] == ["last", "mean"]


def test_profile_table_and_array():
    rows = profile_table(PROFILE)
    assert len(rows) == 2 * 2 * 3
    assert rows[4] == {"variant": "base", "pooling": "mean", "layer": 1, "v_measure": 0.4, "v_measure_std": 0.0,
                       "anisotropy": 5}  # fmt: skip
    array = profile_array(PROFILE)
    assert array.shape == (2, 2, 3)
    np.testing.assert_array_equal(array[1, 1], [0.3, 0.6, 0.1])
    assert np.isnan(profile_array(PROFILE, "uniformity")).all()


def test_reports_are_found_and_read(tmp_path):
    assert find_reports(tmp_path / "missing") == {}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "report.json").write_text(json.dumps({"profiles": {"t": PROFILE}}))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    found = find_reports(tmp_path)
    assert list(found) == ["a", "b"]
    assert read_profiles(found["a"]) == {}
    assert read_profiles(found["b"])["t"]["layers"] == [0, 1, 2]
