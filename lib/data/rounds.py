"""Evaluation rounds: the study repeated on several splits and seeds.

A round is one split plus one seed for everything random in training. With the
``holdout`` scheme each seed draws its own stratified 70/15/15 split (repeated hold-out),
so that a 14-image class is tested on different images in each round; with ``kfold``
each seed deals the images into ``folds`` stratified folds, and round k tests on fold k
and validates on a fold of the rest: every image is tested exactly once per seed.

Splits keep near-duplicate groups whole when ``split.group_near_duplicates`` is on (see
`lib.data.groups`); `round_splits` also returns the plain stratified split of each round, so
that the audit can show what grouping changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.data.groups import assemble_split, group_fold, grouped_stratified_split
from lib.data.sources import SPLITS
from lib.data.split import SplitError, check_splittable, stratified_split


@dataclass(frozen=True)
class Round:
    """One repetition of the study: its folder name, its seed, and its fold (k-fold only).

    The round's seed is the seed of everything random in it: its split (holdout), the
    models' initialisation, shuffling, augmentation and oversampling.
    """

    name: str
    seed: int
    fold: int | None = None


class Rounds(tuple):
    """The evaluation rounds of a run, in the order they run: the one definition of which
    rounds exist and which is first (the first round compares the minority-class methods;
    later rounds train the method it chose)."""

    @property
    def first(self) -> Round:
        return self[0]

    @property
    def names(self) -> list[str]:
        return [round_.name for round_ in self]

    def named(self, name: str | None) -> Round:
        """The round called ``name``; None means the first (what a notebook opened in Jupyter runs)."""
        if name is None:
            return self.first
        for candidate in self:
            if candidate.name == name:
                return candidate
        raise ValueError(f"no evaluation round named {name!r}; the params define {self.names}")


def evaluation_rounds(evaluation) -> Rounds:
    """The rounds a `lib.core.config.EvaluationParams` asks for."""
    if evaluation.scheme == "holdout":
        return Rounds(Round(f"seed-{seed}", seed) for seed in evaluation.seeds)
    return Rounds(
        Round(f"seed-{seed}-fold-{fold + 1}", seed, fold)
        for seed in evaluation.seeds
        for fold in range(evaluation.folds)
    )


def kfold_split(labels: pd.Series, groups: np.ndarray, fractions, folds: int, fold: int, seed: int) -> pd.Series:
    """Round ``fold`` of a stratified (group) k-fold: test is that fold, validation a fold of the rest."""
    train_share, val_share, _ = fractions
    counts = labels.value_counts()
    if len(counts) < 2:
        raise SplitError(f"the dataset has {len(counts)} class(es); a classifier needs at least 2")
    small = counts[counts < folds + 2]
    if not small.empty:
        listed = ", ".join(f"'{label}' has {n}" for label, n in small.sort_values().items())
        raise SplitError(
            f"too few images for {folds}-fold cross-validation: {listed} (each class needs at least "
            f"{folds + 2}: one per fold, plus validation). Use fewer folds or the holdout scheme."
        )
    y = labels.to_numpy()
    rest, test = group_fold(np.arange(len(y)), y, groups, folds, fold, seed)
    train, val = group_fold(rest, y, groups, max(2, round((train_share + val_share) / val_share)), 0, seed)
    return assemble_split(labels, groups, train, val, test)


def round_splits(labels: pd.Series, groups: np.ndarray, params) -> dict[str, dict[str, pd.Series]]:
    """For each round (by name): ``{"plain": ..., "used": ...}`` split Series aligned with ``labels``.

    "plain" ignores the near-duplicate groups (what a random split would do); "used" is the
    split the round trains and tests on: grouped when ``split.group_near_duplicates`` is on.
    """
    fractions = (params.split.train, params.split.val, params.split.test)
    if params.evaluation.scheme == "holdout":
        check_splittable(labels, fractions)
    singletons = np.arange(len(labels))
    grouped = params.split.group_near_duplicates
    splits = {}
    for round_ in evaluation_rounds(params.evaluation):
        if round_.fold is None:
            plain = stratified_split(labels, fractions, round_.seed)
            used = grouped_stratified_split(labels, groups, fractions, round_.seed) if grouped else plain
        else:
            folds = params.evaluation.folds
            plain = kfold_split(labels, singletons, fractions, folds, round_.fold, round_.seed)
            used = kfold_split(labels, groups, fractions, folds, round_.fold, round_.seed) if grouped else plain
        splits[round_.name] = {"plain": plain, "used": used}
    return splits


def assign_round_splits(images: pd.DataFrame, groups: np.ndarray, params) -> dict[str, dict[str, pd.Series]]:
    """`round_splits` for the audit's image table (``usable``, ``label``; ``split`` if the source has one).

    A source that comes with its own split (a manifest) keeps it in every round; only the
    seeds differ. Unusable images get an empty split: every step leaves them out.
    """
    usable = images["usable"].to_numpy()
    rounds = evaluation_rounds(params.evaluation)
    if "split" in images and images.loc[usable, "split"].isin(SPLITS).all():
        given = images["split"].where(usable, "")
        return {r.name: {"plain": given, "used": given} for r in rounds}
    drawn = round_splits(images.loc[usable, "label"], np.asarray(groups)[usable], params)
    return {
        name: {kind: split.reindex(images.index, fill_value="") for kind, split in kinds.items()}
        for name, kinds in drawn.items()
    }
