"""Near-duplicate groups, and splits that never put one group on both sides.

Photos of one product taken in one session look alike without being pixel duplicates, so
a random split leaks: a test image's near-twin is in training. Pairs of similar images
(close perceptual hashes, or ImageNet features with a high cosine similarity) are joined
into groups (connected components: if A~B and B~C, A, B and C are one group), and the
split assigns whole groups, stratified by class, with scikit-learn's
``StratifiedGroupKFold``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from lib.split import SplitError, check_splittable


def feature_extractor(image_size: tuple[int, int], weights: str | None = "imagenet"):
    """The study's own MobileNetV2 model, cut at its pooling layer: same input scaling, same base."""
    import keras

    from lib.config import MobileNetV2Params
    from lib.models import build_mobilenet_v2

    model, _ = build_mobilenet_v2(2, image_size, MobileNetV2Params(weights=weights))
    return keras.Model(model.inputs, model.get_layer("pool").output)


def pooled_features(images: np.ndarray, weights: str | None = "imagenet", batch_size: int = 32) -> np.ndarray:
    """MobileNetV2's globally pooled features (1,280 per image) of uint8 images (N, H, W, 3).

    The images go in as uint8 and each batch is cast to float32 inside the model: the whole
    set as float32 would take 4x the bytes (1.1 GB for the default 1,830 images at 224 px).
    """
    extractor = feature_extractor(images.shape[1:3], weights)
    return extractor.predict(np.asarray(images, dtype=np.uint8), batch_size=batch_size, verbose=0)


def similar_feature_pairs(features: np.ndarray, min_cosine: float, block: int = 1024) -> pd.DataFrame:
    """Pairs (a, b), a < b, of rows whose cosine similarity is at least ``min_cosine``; columns a, b, cosine.

    Computed block by block, so memory stays at ``block`` x N similarities.
    """
    if not -1.0 <= min_cosine <= 1.0:
        raise ValueError(f"min_cosine must lie in [-1, 1], got {min_cosine}")
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms == 0, 1.0, norms)
    found = []
    for start in range(0, len(unit), block):
        similarity = unit[start : start + block] @ unit.T
        rows, cols = np.nonzero(similarity >= min_cosine)
        rows = rows + start
        keep = rows < cols
        found.append(pd.DataFrame({"a": rows[keep], "b": cols[keep], "cosine": similarity[rows[keep] - start, cols[keep]]}))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["a", "b", "cosine"])


def near_duplicate_groups(n_images: int, pairs: pd.DataFrame) -> np.ndarray:
    """A group number per image: images linked by any chain of pairs share one (singletons get their own)."""
    a, b = pairs["a"].to_numpy(dtype=int), pairs["b"].to_numpy(dtype=int)
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_images):
        raise ValueError(f"pairs refer to images outside 0..{n_images - 1}")
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_images, n_images))
    return connected_components(graph, directed=False)[1]


def grouped_stratified_split(
    labels: pd.Series, groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> pd.Series:
    """Train / val / test by whole groups, stratified by class as far as the groups allow.

    The test share is one fold of ``round(1 / test)`` stratified group folds; validation is
    one fold of the rest, the same way. Raises a `SplitError` naming every class that ends up
    missing from a split (its images fall into too few groups).
    """
    train_share, val_share, test_share = fractions
    check_splittable(labels, fractions)
    y, groups = labels.to_numpy(), np.asarray(groups)
    rest, test = group_fold(np.arange(len(y)), y, groups, max(2, round(1 / test_share)), 0, seed)
    train, val = group_fold(rest, y, groups, max(2, round((train_share + val_share) / val_share)), 0, seed)
    return assemble_split(labels, train, val, test)


def group_fold(
    members: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of ``n_folds`` stratified group folds of ``members``: (the rest, the fold)."""
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    rest, held_out = list(folds.split(members, y[members], groups[members]))[fold]
    return members[rest], members[held_out]


def assemble_split(labels: pd.Series, train, val, test) -> pd.Series:
    """The split Series from three position arrays; a `SplitError` names each class a split lacks."""
    assigned = np.empty(len(labels), dtype=object)
    assigned[train], assigned[val], assigned[test] = "train", "val", "test"
    split = pd.Series(assigned, index=labels.index, name="split")
    missing = [
        f"'{label}' has no {name} image"
        for label in sorted(labels.unique())
        for name in ("train", "val", "test")
        if not ((labels == label) & (split == name)).any()
    ]
    if missing:
        raise SplitError(
            "a group-aware split cannot give every class an image in every split: " + "; ".join(missing)
            + ". Its images form too few near-duplicate groups (or too few for this many folds): add "
            "images, loosen the audit's similarity thresholds, use fewer folds, or switch "
            "split.group_near_duplicates off."
        )
    return split


def cross_split_pairs(pairs: pd.DataFrame, split: pd.Series) -> int:
    """How many pairs have their two images in different splits (0 after a group-aware split)."""
    values = split.to_numpy()
    return int((values[pairs["a"].to_numpy(dtype=int)] != values[pairs["b"].to_numpy(dtype=int)]).sum())
