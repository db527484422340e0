import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from lib import stats


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


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    def labels(n):
        y_true = rng.integers(0, 3, n)
        y_pred = np.where(rng.random(n) < 0.8, y_true, (y_true + 1) % 3)
        return y_true, y_pred

    small, large = labels(60), labels(1200)
    low_s, high_s = stats.bootstrap_ci(*small, accuracy_score, n_resamples=500)
    low_l, high_l = stats.bootstrap_ci(*large, accuracy_score, n_resamples=500)
    assert low_s <= accuracy_score(*small) <= high_s
    assert low_l <= accuracy_score(*large) <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 2
    macro = lambda t, p: f1_score(t, p, average="macro")
    assert stats.bootstrap_ci(*large, macro, n_resamples=200, seed=1) == stats.bootstrap_ci(*large, macro, n_resamples=200, seed=1)
