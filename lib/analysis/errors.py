"""The test images worth looking at, from both models' test predictions: side by side, each model's top
losses, its most-confused class pairs, the images only one model gets right, and the examples the report
explains with Grad-CAM (`lib.analysis.explain`).

Every function takes each model's predictions table (`lib.training.evaluate.predictions_table`: path,
relpath, true_label, predicted_label, one ``p_<class>`` column per class) and pairs the models by image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# -log p of a probability of exactly 0 would be infinite; scikit-learn's log_loss clipped at this value.
_SMALLEST_PROBABILITY = 1e-15


def side_by_side(predictions_by_model: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every test image once (index: relpath) with path, true_label and, for each model, ``<model> predicted``,
    ``<model> probability`` (of its predicted class), ``<model> p(true)`` and ``<model> correct``.

    The models' tables must hold the same images with the same true labels.
    """
    if not predictions_by_model:
        raise ValueError("predictions_by_model is empty: give each model's test predictions table")
    tables = {model: _checked_predictions(model, table) for model, table in predictions_by_model.items()}
    first_model, first = next(iter(tables.items()))
    columns = {"path": first["path"], "true_label": first["true_label"]}
    for model, table in tables.items():
        if set(table.index) != set(first.index) or not table["true_label"].reindex(first.index).equals(
                first["true_label"]):
            raise ValueError(f"the predictions of {model!r} and {first_model!r} are not on the same test images "
                             "with the same true labels: they do not pair up")
        table = table.reindex(first.index)
        columns[f"{model} predicted"] = table["predicted_label"]
        columns[f"{model} probability"] = _probability_of(table, table["predicted_label"])
        columns[f"{model} p(true)"] = _probability_of(table, table["true_label"])
        columns[f"{model} correct"] = table["predicted_label"] == table["true_label"]
    return pd.DataFrame(columns).sort_index()


def _checked_predictions(model: str, table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table indexed by relpath, with a probability column for every label it names."""
    needed = {"path", "relpath", "true_label", "predicted_label"}
    labels = set(table["true_label"]) | set(table["predicted_label"]) if needed <= set(table.columns) else set()
    missing = sorted(needed - set(table.columns)) + sorted(f"p_{label}" for label in labels
                                                           if f"p_{label}" not in table.columns)
    if missing:
        raise ValueError(f"the predictions of {model!r} lack the columns {missing}")
    if table["relpath"].duplicated().any():
        raise ValueError(f"the predictions of {model!r} list an image twice: "
                         f"{sorted(table.loc[table['relpath'].duplicated(), 'relpath'])[:5]}")
    return table.set_index("relpath")


def _probability_of(table: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Each row's probability of the class in ``labels`` (its ``p_<label>`` column)."""
    return pd.Series([table.at[row, f"p_{label}"] for row, label in labels.items()], index=table.index, dtype=float)


def _models(paired: pd.DataFrame) -> list[str]:
    return [column.removesuffix(" correct") for column in paired.columns if column.endswith(" correct")]


def explanation_examples(
    predictions_by_model: dict[str, pd.DataFrame], class_names: list[str], rare_class: str | None = None
) -> pd.DataFrame:
    """The test images whose explanations the report shows, the same ones for every model.

    For each class (``rare_class`` first, then ``class_names`` in order; a class without test
    images has no row): one image the models got right (all of them if there is one, else as
    many as possible; the most confident, by the models' mean probability of the true class)
    and, where there is one, another image some model got wrong (as many models as possible;
    the least confident). Ties go to the first relpath, so every run picks the same images.
    Columns: class, example ('correct' or 'wrong'), relpath, then `side_by_side`'s.
    """
    paired = side_by_side(predictions_by_model)
    if rare_class is not None and rare_class not in class_names:
        raise ValueError(f"rare_class {rare_class!r} is not one of the classes {class_names}")
    if rare_class is not None and not (paired["true_label"] == rare_class).any():
        raise ValueError(f"the rare class {rare_class!r} has no test image, so no example can show it")
    models = _models(paired)
    right = paired[[f"{m} correct" for m in models]].sum(axis=1)
    confidence = paired[[f"{m} p(true)" for m in models]].mean(axis=1)
    ranking = pd.DataFrame({"right": right, "confidence": confidence})  # sorted by these, then the relpath index
    order = ([rare_class] if rare_class is not None else []) + [c for c in class_names if c != rare_class]
    rows = []
    for label in order:
        of_class = ranking[paired["true_label"] == label]
        correct = of_class[of_class["right"] > 0].sort_values(["right", "confidence", "relpath"],
                                                              ascending=[False, False, True])
        wrong = of_class[(of_class["right"] < len(models)) & ~of_class.index.isin(correct.index[:1])].sort_values(
            ["right", "confidence", "relpath"])
        for example, candidates in (("correct", correct), ("wrong", wrong)):
            if len(candidates):
                rows.append({"class": label, "example": example, "relpath": candidates.index[0]})
    chosen = pd.DataFrame(rows, columns=["class", "example", "relpath"])
    return chosen.join(paired, on="relpath").reset_index(drop=True)


def top_losses(predictions_by_model: dict[str, pd.DataFrame], k: int) -> pd.DataFrame:
    """For each model, its ``k`` test images of highest cross-entropy (-log p of the true class), highest first.

    Columns: model (whose losses rank the rows), rank (1 = highest), loss, relpath, then
    `side_by_side`'s, so each row shows both models' predictions. Ties go to the first relpath.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    paired = side_by_side(predictions_by_model)
    frames = []
    for model in _models(paired):
        loss = -np.log(paired[f"{model} p(true)"].clip(lower=_SMALLEST_PROBABILITY))
        ranked = loss.rename("loss").to_frame().sort_values(["loss", "relpath"], ascending=[False, True]).head(k)
        frames.append(ranked.reset_index().assign(model=model, rank=np.arange(1, len(ranked) + 1)))
    ranked = pd.concat(frames, ignore_index=True)[["model", "rank", "loss", "relpath"]]
    return ranked.join(paired, on="relpath")


def most_confused(predictions: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """One model's (true_label, predicted_label, count) pairs off the diagonal seen at least ``min_count``
    times, most frequent first (fastai's ``ClassificationInterpretation.most_confused``); ties by label."""
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}")
    missing = {"true_label", "predicted_label"} - set(predictions.columns)
    if missing:
        raise ValueError(f"the predictions lack the columns {sorted(missing)}")
    wrong = predictions[predictions["true_label"] != predictions["predicted_label"]]
    counts = wrong.groupby(["true_label", "predicted_label"]).size().rename("count").reset_index()
    counts = counts[counts["count"] >= min_count]
    return counts.sort_values(["count", "true_label", "predicted_label"], ascending=[False, True, True],
                              ignore_index=True).astype({"count": int})


def discordant_images(predictions_by_model: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The test images one model gets right and the other wrong: the discordant pairs McNemar's test counts.

    Needs exactly two models. Columns: right (the model that got it right), relpath, then
    `side_by_side`'s; sorted by that model (in the given order), then relpath.
    """
    if len(predictions_by_model) != 2:
        raise ValueError(f"discordant_images compares exactly two models, got {len(predictions_by_model)}: "
                         f"{list(predictions_by_model)}")
    paired = side_by_side(predictions_by_model)
    first, second = _models(paired)
    discordant = paired[paired[f"{first} correct"] != paired[f"{second} correct"]]
    right = discordant[f"{first} correct"].map({True: first, False: second})
    order = right.map({first: 0, second: 1})
    table = discordant.assign(right=right, _order=order).reset_index()
    return table.sort_values(["_order", "relpath"], ignore_index=True).drop(columns="_order")[
        ["right", "relpath", *paired.columns]]
