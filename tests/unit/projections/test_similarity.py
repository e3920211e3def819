from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.similarity import cosine_matrix, label_cosines


def test_cosine_matrix_normalises_rows():
    matrix = cosine_matrix(np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]))
    assert np.allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx(0.0) and matrix[0, 2] == pytest.approx(1 / math.sqrt(2))


def test_within_and_between_label_means_leave_out_the_diagonal():
    similarity = np.array(
        [
            [1.0, 0.8, 0.1, 0.2],
            [0.8, 1.0, 0.3, 0.4],
            [0.1, 0.3, 1.0, 0.6],
            [0.2, 0.4, 0.6, 1.0],
        ]
    )
    scores = label_cosines(similarity, ["a", "a", "b", "b"])
    assert scores["within"] == pytest.approx((0.8 + 0.6) / 2)
    assert scores["between"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) / 4)
    assert scores["gap"] == pytest.approx(0.7 - 0.25)


def test_a_side_without_pairs_is_nan_and_a_wrong_length_is_refused():
    scores = label_cosines(np.eye(3), ["a", "b", "c"])
    assert math.isnan(scores["within"]) and scores["between"] == 0.0 and math.isnan(scores["gap"])
    with pytest.raises(ValueError, match="one label per text"):
        label_cosines(np.eye(3), ["a", "b"])
