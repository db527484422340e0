import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from lib.analysis import stats
from lib.core.config import parse_params

CONFIDENCE = parse_params({}).evaluation.confidence


def test_mcnemar_on_known_counts():
    # 10 images only A gets right, 2 only B: exact two-sided p = binomial(2; 12, 0.5) test.
    a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
    result = stats.mcnemar_exact(a, b)
    assert (result["only_a"], result["only_b"]) == (10, 2)
    assert result["p_value"] == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    assert result["p_value"] == pytest.approx(0.0386, abs=1e-4)


def test_mcnemar_of_identical_models_is_one():
    same = np.array([True, False, True, True])
    assert stats.mcnemar_exact(same, same) == {"only_a": 0, "only_b": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar_exact(same, same[:3])


def test_one_round_interval_contains_the_estimate_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    def labels(n):
        y_true = rng.integers(0, 3, n)
        return y_true, np.where(rng.random(n) < 0.8, y_true, (y_true + 1) % 3)

    small, large = labels(60), labels(1200)
    (low_s, high_s), (low_l, high_l) = (stats.rounds_bootstrap([pair], 3, CONFIDENCE, n_resamples=500)
                                        for pair in (small, large))
    assert low_s[0] <= accuracy_score(*small) <= high_s[0]
    assert low_l[0] <= accuracy_score(*large) <= high_l[0]
    assert np.all(high_l - low_l < (high_s - low_s) / 2)


def test_round_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 80)
    y_pred = np.where(rng.random(80) < 0.6, y_true, rng.integers(0, 4, 80))
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: its F1 is 0
    values = stats.round_metrics(y_true, y_pred, 4)
    assert values[0] == pytest.approx(accuracy_score(y_true, y_pred))
    assert values[1] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert values[2] == pytest.approx(f1_score(y_true, y_pred, labels=range(4), average="macro", zero_division=0))
    np.testing.assert_allclose(values[3:], f1_score(y_true, y_pred, labels=range(4), average=None, zero_division=0))
    assert values[6] == 0.0


def test_rounds_bootstrap_brackets_the_mean_and_is_reproducible():
    rng = np.random.default_rng(4)
    rounds = []
    for _ in range(3):
        y_true = rng.integers(0, 3, 120)
        rounds.append((y_true, np.where(rng.random(120) < 0.75, y_true, (y_true + 1) % 3)))
    mean = np.mean([stats.round_metrics(t, p, 3) for t, p in rounds], axis=0)
    low, high = stats.rounds_bootstrap(rounds, 3, CONFIDENCE, n_resamples=400, seed=2)
    assert low.shape == high.shape == (6,)
    assert np.all(low <= mean + 1e-12) and np.all(mean <= high + 1e-12)
    assert np.all(high - low > 0)
    again = stats.rounds_bootstrap(rounds, 3, CONFIDENCE, n_resamples=400, seed=2)
    np.testing.assert_array_equal(low, again[0])
    with pytest.raises(ValueError, match="equally long"):
        stats.rounds_bootstrap([(np.array([0, 1]), np.array([0]))], 2, CONFIDENCE)


def test_paired_difference_is_narrower_than_two_separate_intervals_when_errors_are_nested():
    # B errs on 15 of the 20 images that A errs on, and nowhere else: B is never worse than A.
    y_true = np.arange(100) % 2
    wrong = 1 - y_true
    a = np.where(np.arange(100) < 20, wrong, y_true)
    b = np.where(np.arange(100) < 15, wrong, y_true)
    rounds = [(y_true, a, b), (y_true, a, b)]
    low, high = stats.paired_difference_bootstrap(rounds, 2, CONFIDENCE, n_resamples=500, seed=0)
    assert 0 < low[0] <= 0.05 <= high[0]  # accuracy: B - A
    separate_a = stats.rounds_bootstrap([(y_true, a)] * 2, 2, CONFIDENCE, n_resamples=500, seed=0)
    separate_b = stats.rounds_bootstrap([(y_true, b)] * 2, 2, CONFIDENCE, n_resamples=500, seed=0)
    assert separate_b[0][0] < separate_a[1][0]  # the two separate accuracy intervals overlap
    same_low, same_high = stats.paired_difference_bootstrap([(y_true, a, a)], 2, CONFIDENCE, n_resamples=200, seed=0)
    assert np.all(same_low == 0) and np.all(same_high == 0)
    with pytest.raises(ValueError, match="three equally long"):
        stats.paired_difference_bootstrap([(y_true, a, b[:50])], 2, CONFIDENCE)
