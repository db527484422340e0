"""Hard datasets (issue 18): groups that cannot chain, label conflicts, tiny classes, extreme images."""

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import SHARED_ASSETS, make_class_folders
from PIL import Image

from lib.core.config import ParamsError, parse_params
from lib.data import audit, groups, sources
from lib.data.images import load_rgb
from lib.data.split import SplitError, check_splittable
from lib.report import plots
from lib.training import features as mobilenet_features

FRACTIONS = (0.70, 0.15, 0.15)
DEFAULTS = parse_params({})
WEIGHTS = SHARED_ASSETS / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _inspected(folder):
    return audit.inspect_records(sources.scan_class_folders(folder), 10_000_000)


# --------------------------------------------------------------------------------------
# 1. Groups that do not chain
# --------------------------------------------------------------------------------------


def test_a_chain_within_the_cap_is_one_group_and_a_longer_chain_is_cut_into_pairs():
    chain = pd.DataFrame({"a": [0, 1, 2], "b": [1, 2, 3]})  # 0~1~2~3, but 0 is not like 2
    assert len(set(groups.near_duplicate_groups(5, chain, max_group_size=4))) == 2  # {0..3}, {4}: twins stay
    found = groups.near_duplicate_groups(5, chain, max_group_size=3)
    assert sorted(pd.Series(found).value_counts()) == [1, 2, 2]  # {0,1}, {2,3}, {4}: no chain beyond the cap
    linked = {frozenset(p) for p in zip(chain["a"], chain["b"])}
    for group in np.unique(found):
        members = np.flatnonzero(found == group)
        assert all(frozenset((x, y)) in linked for x in members for y in members if x < y)


def test_a_component_too_large_for_linkage_is_cut_in_graph_order(monkeypatch):
    monkeypatch.setattr(groups, "LINKAGE_LIMIT", 3)
    chain = pd.DataFrame({"a": [0, 1, 2, 3, 4], "b": [1, 2, 3, 4, 5]})
    found = groups.near_duplicate_groups(6, chain, max_group_size=2)
    assert sorted(pd.Series(found).value_counts()) == [2, 2, 2]
    assert all(abs(np.subtract(*np.flatnonzero(found == g))) == 1 for g in np.unique(found))  # linked neighbours


def test_groups_form_within_a_class_and_are_capped():
    clique = pd.DataFrame([(a, b) for a in range(10) for b in range(a + 1, 10)], columns=["a", "b"])
    labels = ["x"] * 10
    assert sorted(pd.Series(groups.near_duplicate_groups(10, clique, labels)).value_counts()) == [10]
    capped = groups.near_duplicate_groups(10, clique, labels, max_group_size=4)
    assert sorted(pd.Series(capped).value_counts()) == [2, 4, 4]
    by_share = groups.near_duplicate_groups(10, clique, labels, max_group_size=None, max_group_share=0.3)
    assert sorted(pd.Series(by_share).value_counts()) == [1, 3, 3, 3]  # at most 30 % of the class's 10 images
    across = pd.DataFrame({"a": [0], "b": [1]})
    assert len(set(groups.near_duplicate_groups(2, across, ["x", "y"]))) == 2  # a pair across labels joins nothing


def test_too_few_groups_is_a_split_error_naming_the_largest_groups_and_the_choices():
    labels = pd.Series(["a"] * 30 + ["b"] * 40)
    pairs = pd.DataFrame([(i, j) for i in range(30, 70) for j in range(i + 1, 70)], columns=["a", "b"])
    group_of = groups.near_duplicate_groups(70, pairs, labels)  # no cap, all of 'b' alike: one group of 40
    with pytest.raises(SplitError) as raised:
        groups.grouped_stratified_split(labels, group_of, FRACTIONS, 42)
    message = str(raised.value)
    assert "The largest groups: 40 of the 40 images of 'b', 1 of the 30 images of 'a'" in message
    for choice in ("audit.feature_min_similarity", "split.max_group_size", "split.group_near_duplicates: false",
                   "data.source: manifest"):
        assert choice in message
    # fewer groups than folds: the project's message, not scikit-learn's ValueError
    with pytest.raises(SplitError, match=r"needs at least 7 near-duplicate groups here, but the 70 images form only 3"):
        groups.grouped_stratified_split(labels, np.array([0] * 30 + [1] * 20 + [2] * 20), FRACTIONS, 42)
    with pytest.raises(SplitError, match=r"The largest groups: 65 images of 2 classes, 5 of the 40 images of 'b'"):
        groups.grouped_stratified_split(labels, np.array([0] * 65 + [1] * 5), FRACTIONS, 42)


@pytest.fixture
def imagenet_home(tmp_path, monkeypatch):
    if not WEIGHTS.is_file():
        pytest.skip("the shared MobileNetV2 weights are not here")
    (tmp_path / "keras" / "models").mkdir(parents=True)
    shutil.copy(WEIGHTS, tmp_path / "keras" / "models" / WEIGHTS.name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def test_default_thresholds_do_not_swallow_a_class_of_lookalikes(tmp_path, imagenet_home):
    """The issue's case: each class one colour, its images alike. Chained pairs swallow a class;
    the default grouping keeps every class splittable."""
    folder = make_class_folders(tmp_path / "alike", {"red": 60, "green": 60, "blue": 60}, size=(64, 64))
    images = _inspected(folder)
    pixels = np.stack([np.asarray(load_rgb(p, (96, 96))) for p in images["path"]])
    features = mobilenet_features.pooled_features(pixels, "imagenet")
    pairs = audit.duplicate_pairs(images, features, DEFAULTS.audit)
    grouped, chained = (pd.Series(g) for g in audit.group_duplicates(images, pairs, DEFAULTS.split))
    chained = chained.value_counts()
    print(f"{len(pairs)} pairs; chained: {len(chained)} groups, largest {chained.max()}; "
          f"grouped: {grouped.nunique()} groups, largest {grouped.value_counts().max()}")
    assert chained.max() >= 50  # chaining swallows (nearly) a whole class
    assert grouped.value_counts().max() <= DEFAULTS.split.max_group_size
    assert (pd.crosstab(images["label"], grouped).gt(0).sum(axis=1) >= 10).all()
    split = groups.grouped_stratified_split(images["label"], grouped.to_numpy(), FRACTIONS, 42)
    assert (pd.crosstab(images["label"], split) > 0).all().all()


def test_group_sizes_and_their_histogram():
    images = pd.DataFrame({"usable": [True] * 6 + [False], "group": [0, 0, 0, 1, 2, 2, 3]})
    sizes = audit.group_sizes(images)
    assert sizes.to_dict() == {1: 1, 2: 1, 3: 1}
    figure = plots.group_size_histogram(sizes)
    assert [round(bar.get_height()) for bar in figure.axes[0].patches] == [1, 1, 1]


# --------------------------------------------------------------------------------------
# 2. Label conflicts and near-duplicates across classes
# --------------------------------------------------------------------------------------


@pytest.fixture
def conflicting_folder(image_folder):
    """alpha/img_000.jpg also filed, byte for byte, as beta/same.jpg."""
    (image_folder / "beta" / "same.jpg").write_bytes((image_folder / "alpha" / "img_000.jpg").read_bytes())
    return image_folder


def test_identical_files_under_two_classes_are_label_conflicts_left_out(conflicting_folder):
    curated, warnings_found = audit.curate(_inspected(conflicting_folder), DEFAULTS.data, DEFAULTS.audit)
    assert warnings_found.to_dict(orient="records") == [
        {"relpath": "alpha/img_000.jpg", "label": "alpha",
         "warning": "label conflict: identical bytes also under class 'beta'", "excluded": True},
        {"relpath": "beta/same.jpg", "label": "beta",
         "warning": "label conflict: identical bytes also under class 'alpha'", "excluded": True},
    ]
    left_out = curated.loc[~curated["usable"]].set_index("relpath")["reason"].to_dict()
    assert left_out == {
        "alpha/img_000.jpg": "label conflict: the same file (identical bytes) is also under class 'beta'",
        "beta/same.jpg": "label conflict: the same file (identical bytes) is also under class 'alpha'",
    }


def test_label_conflicts_can_be_kept(conflicting_folder):
    keep = parse_params({"audit": {"keep_label_conflicts": True}})
    curated, warnings_found = audit.curate(_inspected(conflicting_folder), keep.data, keep.audit)
    assert curated["usable"].all() and warnings_found["excluded"].tolist() == [False, False]


def test_near_duplicates_across_classes_are_listed_for_review(image_folder):
    original = Image.open(image_folder / "alpha" / "img_001.jpg")
    original.resize((44, 52)).save(image_folder / "gamma" / "resized.jpg", quality=80)  # same picture, other label
    images = _inspected(image_folder)
    pairs = audit.near_duplicate_pairs(images, 8)
    review = audit.cross_class_pairs(audit.describe_pairs(pairs, images.assign(split="train")))
    listed = {frozenset((a, b)) for a, b in zip(review["relpath_a"], review["relpath_b"])}
    assert frozenset(("alpha/img_001.jpg", "gamma/resized.jpg")) in listed
    assert (review["label_a"] != review["label_b"]).all()


# --------------------------------------------------------------------------------------
# 3. Tiny classes, and classes left out by the params
# --------------------------------------------------------------------------------------


def test_a_tiny_class_stops_with_a_message_naming_both_options(tmp_path):
    images = _inspected(make_class_folders(tmp_path / "d", {"big": 20, "other": 20, "tiny": 3}))
    curated, _ = audit.curate(images, DEFAULTS.data, DEFAULTS.audit)
    assert curated["usable"].all()  # nothing dropped unless asked
    with pytest.raises(SplitError) as raised:
        check_splittable(curated.loc[curated["usable"], "label"], FRACTIONS)
    assert ("'tiny' has 3 (each class needs at least 7). Add images to these classes, leave them out with "
            "data.exclude_classes: ['tiny'] or with data.min_images_per_class: 7, or supply your own split "
            "with data.source: manifest.") in str(raised.value)


def test_classes_are_left_out_by_name_or_by_size_with_a_reason(tmp_path):
    images = _inspected(make_class_folders(tmp_path / "d", {"big": 20, "other": 20, "tiny": 3, "odd": 8, "single": 1}))
    params = parse_params({"data": {"exclude_classes": ["odd"], "min_images_per_class": 7}})
    curated, _ = audit.curate(images, params.data, params.audit)
    reasons = curated.loc[~curated["usable"]].groupby("label")["reason"].agg(set).to_dict()
    assert reasons == {"odd": {"class left out by data.exclude_classes"},
                       "tiny": {"class has 3 usable images, fewer than data.min_images_per_class (7)"},
                       "single": {"class has 1 usable image, fewer than data.min_images_per_class (7)"}}
    check_splittable(curated.loc[curated["usable"], "label"], FRACTIONS)  # splittable now
    typo = parse_params({"data": {"exclude_classes": ["tinny"]}})
    with pytest.raises(ValueError, match=r"data.exclude_classes names class\(es\) not in the dataset: \['tinny'\]"):
        audit.curate(images, typo.data, typo.audit)


# --------------------------------------------------------------------------------------
# 4. Extreme images
# --------------------------------------------------------------------------------------


def test_tiny_and_sliver_images_are_warnings_kept_unless_asked(image_folder):
    Image.new("RGB", (1, 1), (200, 40, 40)).save(image_folder / "alpha" / "dot.png")
    Image.new("RGB", (4000, 3), (200, 40, 40)).save(image_folder / "alpha" / "sliver.png")
    images = _inspected(image_folder)
    kept, warnings_found = audit.curate(images, DEFAULTS.data, DEFAULTS.audit)
    assert warnings_found.to_dict(orient="records") == [
        {"relpath": "alpha/dot.png", "label": "alpha",
         "warning": "1x1 pixels, a side below audit.min_image_side (32)", "excluded": False},
        {"relpath": "alpha/sliver.png", "label": "alpha",
         "warning": "4000x3 pixels, a side below audit.min_image_side (32); 4000x3 pixels, aspect ratio "
                    "1333.3 over audit.max_aspect_ratio (10)", "excluded": False},
    ]
    assert kept["usable"].all()
    strict = parse_params({"audit": {"exclude_extreme_images": True, "min_image_side": 1}})
    left, _ = audit.curate(images, strict.data, strict.audit)
    assert left.loc[~left["usable"]].set_index("relpath")["reason"].to_dict() == {
        "alpha/sliver.png": "extreme image: 4000x3 pixels, aspect ratio 1333.3 over audit.max_aspect_ratio (10)"
    }


def test_new_params_have_defaults_and_ranges():
    assert DEFAULTS.data.exclude_classes == [] and DEFAULTS.data.min_images_per_class is None
    assert DEFAULTS.audit.keep_label_conflicts is False and DEFAULTS.audit.exclude_extreme_images is False
    with pytest.raises(ParamsError) as raised:
        parse_params({"split": {"max_group_size": 1}, "audit": {"max_aspect_ratio": 0.5},
                      "data": {"min_images_per_class": 0}})
    for field in ("split.max_group_size", "audit.max_aspect_ratio", "data.min_images_per_class"):
        assert field in str(raised.value)
    assert parse_params({"split": {"max_group_size": None}}).split.max_group_size is None


# --------------------------------------------------------------------------------------
# 5. Scale: features streamed from the files, memory-mapped when large
# --------------------------------------------------------------------------------------


def test_streamed_features_are_those_of_the_decoded_images_and_spill_to_disk(tmp_path, image_folder, monkeypatch):
    files = sorted(str(p) for p in image_folder.rglob("*.jpg"))[:7]
    decoded = np.stack([np.asarray(load_rgb(p, (32, 32))) for p in files])
    expected = mobilenet_features.pooled_features(decoded, weights=None)
    in_memory = mobilenet_features.streamed_features(files, (32, 32), weights=None, spill_dir=tmp_path / "spill", chunk=3)
    assert not isinstance(in_memory, np.memmap) and not (tmp_path / "spill").exists()
    np.testing.assert_allclose(in_memory, expected, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(mobilenet_features, "FEATURES_IN_MEMORY_BYTES", 1000)
    spilled = mobilenet_features.streamed_features(files, (32, 32), weights=None, spill_dir=tmp_path / "spill", chunk=3)
    assert isinstance(spilled, np.memmap) and (tmp_path / "spill" / "features.npy").is_file()
    np.testing.assert_allclose(spilled, expected, rtol=1e-4, atol=1e-4)
