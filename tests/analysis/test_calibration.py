"""Calibration error and precision-recall curves on inputs whose answers are known."""

import numpy as np
import pytest

from lib.analysis import calibration


def test_a_perfectly_calibrated_model_has_zero_error():
    # 10 images at confidence 0.8 of which 8 are right; 10 at 0.6 of which 6 are right
    probabilities = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert calibration.expected_calibration_error(labels, probabilities) == pytest.approx(0.0)
    table = calibration.reliability_table(labels, probabilities)
    assert table["images"].tolist() == [10, 10]
    assert table["accuracy"].tolist() == pytest.approx([0.6, 0.8])


def test_an_overconfident_model_has_the_expected_error():
    probabilities = np.array([[0.95, 0.05]] * 4)
    labels = np.array([0, 0, 1, 1])  # confident 0.95, right half the time
    assert calibration.expected_calibration_error(labels, probabilities) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="n_bins"):
        calibration.reliability_table(labels, probabilities, n_bins=0)


def test_precision_recall_curves_per_class():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    labels = np.array([0, 1, 0, 1])
    curves = calibration.precision_recall_curves(labels, probabilities, ["a", "b", "c"])
    assert set(curves["class"]) == {"a", "b"}  # 'c' has no test image
    assert curves.groupby("class")["average_precision"].first().tolist() == [1.0, 1.0]
    assert curves["recall"].between(0, 1).all()
