"""Group-aware splitting: near-duplicates never straddle two splits, classes stay stratified."""

import numpy as np
import pandas as pd
import pytest
from helpers import cross_split_pairs

from lib.data import groups
from lib.data.split import SplitError
from lib.training import features as mobilenet_features

FRACTIONS = (0.70, 0.15, 0.15)


def test_feature_pairs_are_found_by_cosine_similarity():
    features = np.array([[1, 0], [0.99, 0.1], [0, 1], [0, 0]], dtype=float)
    pairs = groups.similar_feature_pairs(features, 0.9, block=2)  # blocks smaller than N
    assert pairs[["a", "b"]].values.tolist() == [[0, 1]]
    assert pairs["cosine"].iloc[0] == pytest.approx(0.99 / np.hypot(0.99, 0.1), abs=1e-6)
    with pytest.raises(ValueError, match="min_cosine"):
        groups.similar_feature_pairs(features, 1.5)


def test_chained_groups_join_chains_of_pairs():
    pairs = pd.DataFrame({"a": [0, 1, 5], "b": [1, 2, 6]})
    found = groups.chained_groups(7, pairs)
    assert found[0] == found[1] == found[2] and found[5] == found[6]
    assert len(set(found)) == 4  # {0,1,2}, {3}, {4}, {5,6}
    with pytest.raises(ValueError, match="outside"):
        groups.near_duplicate_groups(3, pairs)
    with pytest.raises(ValueError, match="outside"):
        groups.chained_groups(3, pairs)


def _dataset(rng, per_class=(60, 40, 30), group_size=3):
    """Classes made of groups of near-duplicates (consecutive images), with their pairs."""
    labels, pairs, start = [], [], 0
    for index, count in enumerate(per_class):
        labels += [f"c{index}"] * count
        for first in range(start, start + count, group_size):
            members = list(range(first, min(first + group_size, start + count)))
            pairs += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        start += count
    return pd.Series(labels), pd.DataFrame(pairs, columns=["a", "b"])


def test_no_group_spans_two_splits_and_classes_stay_stratified():
    labels, pairs = _dataset(np.random.default_rng(0))
    group_of = groups.near_duplicate_groups(len(labels), pairs)
    split = groups.grouped_stratified_split(labels, group_of, FRACTIONS, 42)
    assert cross_split_pairs(pairs, split) == 0
    for group in np.unique(group_of):
        assert split[group_of == group].nunique() == 1
    shares = pd.crosstab(labels, split, normalize="index")
    assert (shares["test"].between(0.08, 0.25)).all() and (shares["train"] > 0.55).all()
    # a random split of the same data does separate near-duplicates
    from lib.data.split import stratified_split
    assert cross_split_pairs(pairs, stratified_split(labels, FRACTIONS, 42)) > 0


def test_a_class_in_too_few_groups_is_a_clear_error():
    labels = pd.Series(["a"] * 30 + ["b"] * 8)
    pairs = pd.DataFrame([(a, b) for a in range(30, 38) for b in range(a + 1, 38)], columns=["a", "b"])  # all of 'b' alike
    with pytest.raises(SplitError, match=r"'b' has no (train|val|test) image.*too few near-duplicate groups"):
        groups.grouped_stratified_split(labels, groups.near_duplicate_groups(38, pairs), FRACTIONS, 42)


def test_an_image_and_its_copy_are_a_feature_pair():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    images[3] = images[0]
    features = mobilenet_features.pooled_features(images, weights=None)
    assert features.shape == (4, 1280)
    pairs = groups.similar_feature_pairs(features, 0.9999)
    assert (0, 3) in set(zip(pairs["a"], pairs["b"]))


def test_features_of_uint8_images_are_those_of_the_same_images_as_float32():
    import keras

    images = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)  # two batches
    keras.utils.set_random_seed(0)
    from_uint8 = mobilenet_features.pooled_features(images, weights=None)
    keras.utils.set_random_seed(0)
    from_float = mobilenet_features.feature_extractor((32, 32), weights=None).predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(from_uint8, from_float, rtol=1e-6, atol=1e-6)
