"""Evaluation rounds: repeated hold-out and k-fold, each round's split drawn from its own seed."""

import numpy as np
import pandas as pd
import pytest
from helpers import cross_split_pairs

from lib.core.config import ParamsError, parse_params
from lib.data import rounds
from lib.data.split import SplitError


def _grouped_dataset(per_class=(60, 40, 21), group_size=3):
    """Labels, and groups of ``group_size`` consecutive images of one class."""
    labels = pd.Series([f"c{i}" for i, n in enumerate(per_class) for _ in range(n)])
    return labels, np.arange(len(labels)) // group_size


def test_round_names_follow_the_scheme():
    holdout = rounds.evaluation_rounds(parse_params({}).evaluation)
    assert [(r.name, r.seed, r.fold) for r in holdout] == [("seed-42", 42, None), ("seed-43", 43, None),
                                                          ("seed-44", 44, None)]
    kfold = rounds.evaluation_rounds(parse_params({"evaluation": {"scheme": "kfold", "seeds": [7], "folds": 3}}).evaluation)
    assert [r.name for r in kfold] == ["seed-7-fold-1", "seed-7-fold-2", "seed-7-fold-3"]
    assert kfold.first == kfold[0] and kfold.named(None) == kfold[0] and kfold.named("seed-7-fold-2") == kfold[1]
    assert kfold.names == ["seed-7-fold-1", "seed-7-fold-2", "seed-7-fold-3"]
    with pytest.raises(ValueError, match="no evaluation round named 'seed-8'"):
        kfold.named("seed-8")
    with pytest.raises(ParamsError, match="seeds must be distinct"):
        parse_params({"evaluation": {"seeds": [1, 1]}})


def test_holdout_rounds_keep_groups_whole_and_differ_by_seed():
    labels, group_of = _grouped_dataset()
    splits = rounds.round_splits(labels, group_of, parse_params({}))
    pairs = pd.DataFrame({"a": np.arange(len(labels) - 1), "b": np.arange(1, len(labels))})
    pairs = pairs[group_of[pairs["a"]] == group_of[pairs["b"]]]
    used = [kinds["used"] for kinds in splits.values()]
    for split in used:
        assert cross_split_pairs(pairs, split) == 0
        assert (pd.crosstab(labels, split) > 0).all().all(), "every class in every split"
    assert sum(cross_split_pairs(pairs, kinds["plain"]) for kinds in splits.values()) > 0
    assert not used[0].equals(used[1])


def test_kfold_tests_every_image_exactly_once_per_seed():
    labels, group_of = _grouped_dataset()
    params = parse_params({"evaluation": {"scheme": "kfold", "seeds": [3], "folds": 4}})
    splits = rounds.round_splits(labels, group_of, params)
    tested = np.zeros(len(labels), dtype=int)
    for kinds in splits.values():
        split = kinds["used"]
        tested += (split == "test").to_numpy()
        assert set(split) == {"train", "val", "test"}
        for group in np.unique(group_of):  # no group in two splits
            assert split[group_of == group].nunique() == 1
    assert (tested == 1).all()


def test_kfold_names_a_class_too_small_for_its_folds():
    labels = pd.Series(["big"] * 40 + ["small"] * 5)
    params = parse_params({"evaluation": {"scheme": "kfold", "folds": 5}, "split": {"group_near_duplicates": False}})
    with pytest.raises(SplitError, match=r"5-fold cross-validation: 'small' has 5 \(each class needs at least 7"):
        rounds.round_splits(labels, np.arange(45), params)
