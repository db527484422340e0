"""The active-learning benchmark: every strategy starts from the same labels and is scored on the same test split."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from lib.core.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("active_learning", PROJECT_ROOT / "benchmarks" / "active_learning.py")
active_learning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(active_learning)


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Three classes of 8-dimensional points (60, 40 and 10), and a stratified split of them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [60, 40, 10])
    features = rng.normal(size=(len(labels), 8)) + 2.5 * np.eye(8)[labels]
    split = pd.Series(np.where(np.arange(len(labels)) % 5 == 0, "test", np.where(np.arange(len(labels)) % 5 == 1,
                                                                                  "val", "train")))
    return features, labels, split


def test_every_strategy_starts_from_the_same_labels_and_scores_the_same_test_split(monkeypatch):
    features, labels, split = blobs()
    scored = []  # the features every fit is asked to score
    fit_probe = active_learning.probe.probabilities

    def recording(fitted, rows, n_classes):
        scored.append(rows.copy())
        return fit_probe(fitted, rows, n_classes)

    monkeypatch.setattr(active_learning.probe, "probabilities", recording)
    results = active_learning.curves(features, labels, split, seeds=[0, 1], initial=2, batch=5, steps=3)
    first = results[results["step"] == 0].set_index(["seed", "strategy"])["labelled"]
    for seed in (0, 1):
        starts = set(first.loc[seed])
        assert len(starts) == 1, "one initial labelled set per seed, whatever the strategy"
        assert len(next(iter(starts))) == 6  # 2 per class
    assert set(first.loc[0]) != set(first.loc[1]), "the seeds draw different initial labels"
    test = np.flatnonzero(split == "test")
    scored_tests = [rows for rows in scored if len(rows) == len(test)]  # the pool's rows are never that many
    assert len(scored_tests) == 2 * len(active_learning.STRATEGIES) * 4, "every fit of every strategy is scored"
    assert all(np.array_equal(rows, features[test]) for rows in scored_tests), "always on the same test split"
    assert results.groupby(["seed", "strategy"])["labels"].apply(list).map(lambda x: x == [6, 11, 16, 21]).all()
    assert set(results["strategy"]) == set(active_learning.STRATEGIES)


def test_the_strategies_pick_from_the_unlabelled_pool_as_they_say():
    rng = np.random.default_rng(0)
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4], [0.99, 0.01]])
    assert active_learning.acquire("margin", probabilities, 2, rng).tolist() == [1, 3]
    balanced = active_learning.acquire("balanced random", probabilities, 2, rng)
    assert sorted(probabilities[balanced].argmax(axis=1)) == [0, 1], "one of each predicted class"
    assert len(set(active_learning.acquire("random", probabilities, 5, rng))) == 5
    with pytest.raises(ValueError, match="unknown strategy"):
        active_learning.acquire("greedy", probabilities, 1, rng)


def test_the_summary_gives_a_mean_and_an_interval_per_strategy_and_label_count():
    results = pd.DataFrame({"strategy": ["a"] * 4, "seed": [0, 1, 2, 3], "labels": [10] * 4,
                            "macro_f1": [0.5, 0.6, 0.7, 0.8], "rare_f1": [0.0, 1.0, 1.0, 1.0], "rare_labelled": 2})
    row = active_learning.summary(results).loc[("a", 10)]
    assert row[("macro_f1", "mean")] == pytest.approx(0.65)
    assert 0.5 <= row[("macro_f1", "low")] < 0.65 < row[("macro_f1", "high")] <= 0.8
    assert row[("rare_labelled", "low")] == row[("rare_labelled", "high")] == 2
