import numpy as np
import pandas as pd
import pytest

from lib.core import provenance
from lib.core.config import parse_params
from lib.data import rounds, split

FRACTIONS = (0.70, 0.15, 0.15)


def _labels(counts: dict[str, int]) -> pd.Series:
    return pd.Series([label for label, n in counts.items() for _ in range(n)], name="label")


def test_split_is_stratified_disjoint_and_reproducible():
    labels = _labels({"a": 200, "b": 100, "c": 14})
    first = split.stratified_split(labels, FRACTIONS, 42)
    assert first.equals(split.stratified_split(labels, FRACTIONS, 42))
    assert not first.equals(split.stratified_split(labels, FRACTIONS, 1))

    table = pd.crosstab(labels, first)
    expected = pd.DataFrame({"train": [140, 70], "val": [30, 15], "test": [30, 15]}, index=["a", "b"])
    assert (table.loc[["a", "b"], expected.columns] - expected).abs().max().max() <= 1  # rounding
    assert (table.loc["c"] >= 2).all() and table.loc["c", "train"] >= 9
    assert set(first) == {"train", "val", "test"} and len(first) == len(labels)


def test_a_class_too_small_to_split_is_named_with_its_count():
    labels = _labels({"big": 50, "tiny": 2, "one": 1})
    with pytest.raises(split.SplitError) as raised:
        split.stratified_split(labels, FRACTIONS, 42)
    message = str(raised.value)
    assert "'one' has 1, 'tiny' has 2" in message
    assert "each class needs at least 7" in message
    assert "data.source: manifest" in message


def test_a_single_class_cannot_be_classified():
    with pytest.raises(split.SplitError, match="1 class"):
        split.check_splittable(_labels({"only": 40}), (0.7, 0.15, 0.15))


def test_minimum_class_size_follows_the_smallest_fraction():
    assert split.min_images_per_class((0.70, 0.15, 0.15)) == 7
    assert split.min_images_per_class((0.5, 0.25, 0.25)) == 4
    assert split.min_images_per_class((0.4, 0.3, 0.3)) == 4


def test_balanced_class_weights():
    weights = split.balanced_class_weights(_labels({"a": 30, "b": 10}))
    assert weights == pytest.approx({"a": 40 / (2 * 30), "b": 40 / (2 * 10)})


def test_a_manifest_split_is_kept_in_every_round_and_unusable_images_are_excluded():
    images = pd.DataFrame(
        {"label": ["a"] * 4 + ["b"] * 4, "usable": [True] * 7 + [False],
         "split": ["train", "train", "val", "test", "train", "val", "test", "train"]}
    )
    assigned = rounds.assign_round_splits(images, np.arange(8), parse_params({}))
    assert list(assigned) == ["seed-42", "seed-43", "seed-44"]
    for kinds in assigned.values():
        assert kinds["used"].tolist() == ["train", "train", "val", "test", "train", "val", "test", ""]


def test_each_round_draws_its_own_split_when_the_source_has_none():
    images = pd.DataFrame({"label": ["a"] * 20 + ["b"] * 20, "usable": [True] * 39 + [False]})
    assigned = rounds.assign_round_splits(images, np.arange(40), parse_params({"split": {"group_near_duplicates": False}}))
    used = [kinds["used"] for kinds in assigned.values()]
    for split_ in used:
        assert split_.iloc[-1] == ""
        assert split_.iloc[:-1].isin(["train", "val", "test"]).all()
    assert not used[0].equals(used[1]), "a new seed draws a new split"
    assert used[0].equals(assigned["seed-42"]["plain"]), "without grouping the plain split is the one used"


def test_manifest_hash_ignores_where_the_data_lives():
    manifest = pd.DataFrame(
        {"path": ["/a/x.jpg", "/a/y.jpg"], "relpath": ["x.jpg", "y.jpg"], "label": ["p", "q"],
         "split": ["train", "test"], "sha256": ["1", "2"]}
    )
    moved = manifest.assign(path=["/b/x.jpg", "/b/y.jpg"]).iloc[::-1]
    assert provenance.manifest_sha256(manifest) == provenance.manifest_sha256(moved)
    relabelled = manifest.assign(label=["q", "q"])
    assert provenance.manifest_sha256(manifest) != provenance.manifest_sha256(relabelled)


def test_written_manifest_round_trips(tmp_path):
    images = pd.DataFrame(
        {"path": ["/x/1.jpg", "/x/2.jpg", "/x/3.jpg"], "relpath": ["1.jpg", "2.jpg", "3.jpg"],
         "label": ["a", "b", "a"], "split": ["train", "test", ""], "sha256": ["h1", "h2", "h3"],
         "usable": [True, True, False]}
    )
    target = tmp_path / "data" / "split.csv"
    split.write_split_manifest(images, target)
    back = split.read_split(target)
    assert list(back.columns) == split.MANIFEST_COLUMNS
    assert sorted(back["relpath"]) == ["1.jpg", "2.jpg"]
    with pytest.raises(FileNotFoundError, match="run notebooks/01_data_audit.ipynb"):
        split.read_split(tmp_path / "missing.csv")
    assert np.all(back["split"].isin(["train", "test"]))
