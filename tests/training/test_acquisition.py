"""Acquisition scores: which photo a model is least sure of, and the order photos are put up for labelling."""

import numpy as np
import pytest

from lib.training import acquisition

EASY = [0.96, 0.01, 0.01, 0.01, 0.01]
AMBIGUOUS = [0.48, 0.47, 0.03, 0.01, 0.01]  # two classes nearly tied
SPREAD = [0.40, 0.15, 0.15, 0.15, 0.15]  # unsure among many, but one class clearly ahead of the second


@pytest.mark.parametrize("score", list(acquisition.SCORES))
def test_the_ambiguous_photo_comes_before_the_easy_one_whatever_the_input_order(score):
    for probabilities, ambiguous_row in (([EASY, AMBIGUOUS], 1), ([AMBIGUOUS, EASY], 0)):
        order, values = acquisition.labelling_order(np.array(probabilities), score)
        assert order.tolist() == [ambiguous_row, 1 - ambiguous_row]
        assert values.shape == (2,)


def test_margin_and_entropy_values_and_where_they_disagree():
    probabilities = np.array([EASY, AMBIGUOUS, SPREAD])
    np.testing.assert_allclose(acquisition.margin(probabilities), [0.95, 0.01, 0.25])
    assert acquisition.entropy(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx([0.0, np.log(2)])
    assert acquisition.labelling_order(probabilities, "margin")[0].tolist() == [1, 2, 0]
    assert acquisition.labelling_order(probabilities, "entropy")[0].tolist() == [2, 1, 0]
    assert acquisition.DEFAULT_SCORE == "margin"


def test_the_order_is_deterministic_and_ties_keep_the_order_given():
    probabilities = np.array([EASY, AMBIGUOUS, EASY, AMBIGUOUS])
    first = acquisition.labelling_order(probabilities)
    assert first[0].tolist() == [1, 3, 0, 2]
    again = acquisition.labelling_order(probabilities.copy())
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_an_unknown_score_or_a_single_class_is_refused():
    with pytest.raises(ValueError, match="unknown acquisition score 'uncertainty': choose one of margin, entropy"):
        acquisition.labelling_order(np.array([EASY]), "uncertainty")
    with pytest.raises(ValueError, match=r"\(images, classes >= 2\)"):
        acquisition.labelling_order(np.array([[1.0], [1.0]]))
