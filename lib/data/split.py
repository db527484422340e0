"""Stratified train/validation/test splits, their manifests, and the class weights they imply.

Each evaluation round's split is drawn once, by the audit notebook (see `lib.data.rounds`), and
written as a manifest that every later step of that round reads; nothing downstream re-splits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from lib.data.sources import SPLITS

MANIFEST_COLUMNS = ["path", "relpath", "label", "split", "sha256"]


class SplitError(ValueError):
    """The dataset cannot be split as asked."""


def min_images_per_class(fractions: tuple[float, float, float]) -> int:
    """Fewest images a class needs so that stratification gives every split at least one."""
    return max(3, math.ceil(1 / min(fractions)))


def check_splittable(labels: pd.Series, fractions: tuple[float, float, float]) -> None:
    """Raise a `SplitError` naming every class too small for the split, and what to do."""
    counts = labels.value_counts()
    if len(counts) < 2:
        raise SplitError(
            f"the dataset has {len(counts)} class(es) {sorted(counts.index)}; a classifier needs at least 2"
        )
    needed = min_images_per_class(fractions)
    small = counts[counts < needed].sort_values()
    if not small.empty:
        listed = ", ".join(f"'{label}' has {n}" for label, n in small.items())
        raise SplitError(
            f"too few images for a stratified {'/'.join(f'{f:.0%}' for f in fractions)} split: {listed} "
            f"(each class needs at least {needed}). Add images to these classes, leave them out with "
            f"data.exclude_classes: [{', '.join(repr(str(label)) for label in small.index)}] or with "
            f"data.min_images_per_class: {needed}, or supply your own split with data.source: manifest."
        )


def stratified_split(labels: pd.Series, fractions: tuple[float, float, float], seed: int) -> pd.Series:
    """Assign each image to train / val / test (``fractions``), stratified by class, reproducibly for a seed.

    Returns a Series of split names aligned with ``labels``.
    """
    check_splittable(labels, fractions)
    train_share, val_share, test_share = fractions
    positions = np.arange(len(labels))
    rest, test = train_test_split(positions, test_size=test_share, stratify=labels.to_numpy(), random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_share / (train_share + val_share), stratify=labels.to_numpy()[rest], random_state=seed
    )
    assigned = np.empty(len(labels), dtype=object)
    assigned[train], assigned[val], assigned[test] = "train", "val", "test"
    return pd.Series(assigned, index=labels.index, name="split")


def split_table(images: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split (rows: classes, columns: train, val, test, total)."""
    table = pd.crosstab(images["label"], images["split"]).reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.rename_axis(index="class", columns=None)


def balanced_class_weights(train_labels: pd.Series) -> dict[str, float]:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * n_samples_of_class)."""
    classes = np.array(sorted(train_labels.unique()))
    weights = compute_class_weight("balanced", classes=classes, y=train_labels.to_numpy())
    return {str(label): float(weight) for label, weight in zip(classes, weights)}


def write_split_manifest(images: pd.DataFrame, path) -> pd.DataFrame:
    """Write the usable images with their split; returns what was written."""
    manifest = images.loc[images["usable"], MANIFEST_COLUMNS].sort_values(["split", "label", "relpath"])
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    return manifest


def read_split(path) -> pd.DataFrame:
    """The split manifest the audit wrote, for every later step."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/01_data_audit.ipynb (or ./run_all.sh) first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)
