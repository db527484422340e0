"""Every figure of the study, one function each, shared by all notebooks.

Each function takes plain data (tables, arrays), draws on a new figure and returns it,
so a notebook shows it and a test can check it without a screen.
"""

from __future__ import annotations

import math
import unicodedata

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.data.sources import SPLITS

sns.set_theme(context="notebook", style="whitegrid")


def class_counts_bar(counts: pd.Series, title: str = "Images per class") -> plt.Figure:
    """Horizontal bars, one per class, with the count written at the end of each bar."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(counts) + 1.2))
    sns.barplot(x=counts.to_numpy(), y=[display_label(c) for c in counts.index], ax=ax, color="tab:blue", orient="h")
    for y, value in enumerate(counts.to_numpy()):
        ax.text(value, y, f" {value:,}", va="center")
    ax.set(xlabel="images", ylabel="", title=title)
    ax.set_xlim(0, counts.max() * 1.15)
    fig.tight_layout()
    return fig


def split_counts_bar(split_table: pd.DataFrame) -> plt.Figure:
    """Stacked bars of train / val / test images per class."""
    parts = split_table[list(SPLITS)].rename(index=display_label)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(parts) + 1.2))
    parts.plot.barh(stacked=True, ax=ax, color=["tab:blue", "tab:orange", "tab:green"])
    ax.invert_yaxis()
    ax.set(xlabel="images", ylabel="", title="Split sizes per class")
    fig.tight_layout()
    return fig


def image_size_scatter(images: pd.DataFrame) -> plt.Figure:
    """Width against height of every usable image, coloured by class."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shown = images.assign(label=images["label"].map(display_label))
    sns.scatterplot(data=shown, x="width", y="height", hue="label", alpha=0.6, ax=ax, s=18)
    ax.set(title="Image sizes (pixels)")
    ax.legend(title="class", fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def colour_mode_bar(images: pd.DataFrame) -> plt.Figure:
    """Counts of PIL colour modes (RGB, L, RGBA, CMYK, P, ...) per class."""
    table = pd.crosstab(images["mode"], images["label"].map(display_label))
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(table) + 1.5))
    table.plot.barh(stacked=True, ax=ax)
    ax.set(xlabel="images", ylabel="colour mode", title="Colour modes")
    ax.legend(title="class", fontsize="small")
    fig.tight_layout()
    return fig


def image_grid(
    images: list[np.ndarray], titles: list[str], columns: int, row_labels: list[str] | None = None
) -> plt.Figure:
    """A grid of images with a title each; optional labels at the start of each row."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(display_label(title, max_length=40), fontsize=8)
    if row_labels:
        for row, label in enumerate(row_labels):
            axes[row, 0].text(
                -0.08, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9
            )
    fig.tight_layout()
    return fig


def duplicate_pairs_grid(pairs: pd.DataFrame, load, max_pairs: int = 6) -> plt.Figure | None:
    """Side-by-side thumbnails of duplicate pairs (``load`` maps a row's path to an image)."""
    shown = pairs.head(max_pairs)
    if shown.empty:
        return None
    images, titles = [], []
    for _, pair in shown.iterrows():
        for side in ("a", "b"):
            images.append(load(pair[f"path_{side}"]))
            titles.append(f"{pair[f'label_{side}']} ({pair[f'split_{side}']})")
    return image_grid(images, titles, columns=4)


def _draw_learning_curve(ax: plt.Axes, history: pd.DataFrame, metric: str, title: str) -> None:
    ax.plot(history["epoch"], history[metric], "o-", label="training", markersize=4)
    ax.plot(history["epoch"], history[f"val_{metric}"], "o-", label="validation", markersize=4)
    phase_starts = history.loc[history["phase"] != history["phase"].shift(), "epoch"].iloc[1:]
    for start in phase_starts:
        ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.text(start - 0.4, 0.02, history.loc[history["epoch"] == start, "phase"].iloc[0],
                transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
    best = history[history["best"]]
    ax.scatter(best["epoch"], best[f"val_{metric}"], s=120, facecolors="none", edgecolors="black",
               label="kept (best val_loss)", zorder=3)
    ax.set(xlabel="epoch", ylabel=metric, title=f"{title} {metric}".strip())
    ax.xaxis.get_major_locator().set_params(integer=True)


def learning_curves(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Accuracy and loss per epoch, training vs validation; phase boundaries dashed, kept epoch circled."""
    return learning_curves_grid({title: history})


def learning_curves_grid(histories: dict[str, pd.DataFrame]) -> plt.Figure:
    """One row of accuracy and loss curves per model."""
    fig, axes = plt.subplots(len(histories), 2, figsize=(11, 3.8 * len(histories)), squeeze=False)
    for row, (title, history) in zip(axes, histories.items()):
        for ax, metric in zip(row, ("accuracy", "loss")):
            _draw_learning_curve(ax, history, metric, title)
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def confusion_matrices(counts: pd.DataFrame, normalised: pd.DataFrame, title: str = "") -> plt.Figure:
    """The confusion matrix as counts and row-normalised (recall on the diagonal), side by side."""
    size = 2.2 + 0.75 * len(counts)
    counts, normalised = (t.rename(index=display_label, columns=display_label) for t in (counts, normalised))
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axes[0], square=True)
    sns.heatmap(normalised, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=axes[1], square=True)
    axes[0].set_title(f"{title} confusion matrix (counts)".strip())
    axes[1].set_title(f"{title} confusion matrix (row-normalised)".strip())
    for ax in axes:
        ax.set(xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def confusion_side_by_side(counts_by_model: dict[str, pd.DataFrame], annotate_up_to: int = 20) -> plt.Figure:
    """Row-normalised confusion matrices, one per model, each cell annotated with share and count (with more
    than ``annotate_up_to`` classes the cells are too small: colour only, and a figure that fits a page)."""
    n_classes = len(next(iter(counts_by_model.values())))
    annotate = n_classes <= annotate_up_to
    size = 2.4 + 0.8 * n_classes if annotate else 7.5
    fig, axes = plt.subplots(1, len(counts_by_model), figsize=(size * len(counts_by_model), size), squeeze=False)
    for ax, (title, counts) in zip(axes.flat, counts_by_model.items()):
        counts = counts.rename(index=display_label, columns=display_label)
        shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
        labels = shares.round(2).astype(str) + "\n(" + counts.astype(str) + ")" if annotate else False
        sns.heatmap(shares, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax, square=True,
                    annot_kws={"fontsize": 10}, xticklabels=True, yticklabels=True)
        if not annotate:
            ax.tick_params(labelsize=4)
        ax.set(title=title, xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def per_class_f1_bar(f1_table: pd.DataFrame) -> plt.Figure:
    """Grouped bars: F1 of each class for each model (colour); classes across, or down the page when there are
    more than a dozen."""
    long = f1_table.rename(index=display_label).reset_index().melt(id_vars="class", var_name="model", value_name="F1")
    many = len(f1_table) > 12
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(f1_table) + 1.5) if many else (1.2 * len(f1_table) + 3, 3.8))
    if many:
        sns.barplot(data=long, y="class", x="F1", hue="model", ax=ax, orient="h")
        ax.set(xlim=(0, 1.05), ylabel="", title="F1 per class on the test split")
        ax.tick_params(axis="y", labelsize=6)
    else:
        sns.barplot(data=long, x="class", y="F1", hue="model", ax=ax)
        ax.set(ylim=(0, 1.05), xlabel="", title="F1 per class on the test split")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig

def leak_bars(leaks: pd.DataFrame) -> plt.Figure:
    """Per round: test images with a near-duplicate in training, plain split vs the split used."""
    columns = [c for c in leaks.columns if c.startswith("test images")]
    long = leaks[columns].rename(columns=lambda c: c.split("(")[-1].rstrip(")")).reset_index().melt(
        id_vars="round", var_name="split", value_name="test images")
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(leaks) + 1.8))
    sns.barplot(data=long, y="round", x="test images", hue="split", ax=ax, orient="h")
    ax.set(xlabel="test images with a near-duplicate in training", ylabel="",
           title="Leaks: a plain stratified split vs the split used")
    fig.tight_layout()
    return fig


def reliability_diagrams(calibration: dict[str, dict]) -> plt.Figure:
    """Accuracy against confidence per bin, one panel per model (`lib.analysis.compare.calibration_by_model`), with ECE."""
    fig, axes = plt.subplots(1, len(calibration), figsize=(4.2 * len(calibration), 4), squeeze=False)
    for ax, (name, found) in zip(axes[0], calibration.items()):
        table = found["reliability"]
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        shown = table[table["images"] > 0]
        ax.bar(shown["confidence"], shown["accuracy"], width=0.08, alpha=0.7, label="accuracy in bin")
        ax.plot(shown["confidence"], shown["accuracy"], "o", color="tab:blue")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top probability)", ylabel="accuracy",
               title=f"{name}: ECE {found['ece']:.3f}")
        ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig


def precision_recall_grid(calibration: dict[str, dict]) -> plt.Figure:
    """One panel per model: each class's precision-recall curve (``pr_curves`` of
    `lib.analysis.compare.calibration_by_model`), its average precision in the legend."""
    fig, axes = plt.subplots(1, len(calibration), figsize=(4.6 * len(calibration), 4), squeeze=False)
    for ax, (name, found) in zip(axes[0], calibration.items()):
        table = found["pr_curves"]
        for label, curve in table.groupby("class", sort=False):
            ax.plot(curve["recall"], curve["precision"], drawstyle="steps-post",
                    label=f"{display_label(label)} (AP {curve['average_precision'].iloc[0]:.2f})")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision", title=name)
        ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    return fig


def metric_by_round(per_round: pd.DataFrame, metric: str) -> plt.Figure:
    """One point per round and model (``per_round``: columns round, model, metric), with each model's mean."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.stripplot(data=per_round, x=metric, y="model", hue="round", ax=ax, size=8, jitter=False)
    means = per_round.groupby("model", sort=False)[metric].mean()
    for y, model in enumerate(per_round["model"].drop_duplicates()):
        ax.plot([means[model]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=2)
    ax.set(xlabel=metric, ylabel="", title=f"{metric} in each round (bar: mean)")
    ax.legend(fontsize="x-small", title="round", title_fontsize="x-small", loc="best")
    fig.tight_layout()
    return fig


def method_comparison_bars(methods: pd.DataFrame) -> plt.Figure:
    """Validation macro-F1 and minority-class F1 of each minority-class method, per model."""
    val = methods[methods["split"] == "val"]
    long = val.melt(id_vars=["model", "method"], value_vars=["macro_f1", "minority_f1"],
                    var_name="score", value_name="value")
    grid = sns.catplot(data=long, kind="bar", x="value", y="method", hue="score", col="model",
                       height=3.0, aspect=1.5, orient="h")
    grid.set(xlim=(0, 1.05), xlabel="validation score", ylabel="")
    grid.figure.suptitle("Minority-class methods on the first round's validation split", y=1.04)
    return grid.figure


def visible(text) -> str:
    """Text with its control characters (a tab or a newline in a class name) written as their escapes (``\\t``),
    so that a figure or a page shows them instead of breaking a line or drawing a box."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in str(text))


def display_label(text, max_length: int = 28) -> str:
    """A class name as a figure shows it: control characters written as their escapes (`visible`),
    matplotlib's math delimiter ``$`` escaped, and a long name cut with an ellipsis."""
    shown = visible(text)
    if len(shown) > max_length:
        shown = shown[: max_length - 1] + "…"
    return shown.replace("$", r"\$")


def grad_cam_grid(
    examples: pd.DataFrame,
    photos: list[np.ndarray],
    overlays: dict[str, list[np.ndarray]],
    examples_per_row: int = 2,
    title: str = "Grad-CAM: where each model finds the evidence for the class it predicts",
) -> plt.Figure:
    """Each example's photo, then each model's Grad-CAM overlay beside it, ``examples_per_row`` examples a row.

    ``examples``: one row per photo with true_label, ``<model> predicted``, ``<model> probability``
    and ``<model> correct`` (`lib.analysis.explain.explanation_examples`); ``photos``: the photos in that
    order; ``overlays``: for each model, its overlay of each photo (`lib.analysis.explain.overlay`). The photo
    is titled with the true label, each overlay with the model, its predicted label and probability,
    and 'right' (green) or 'wrong' (red). Class names are shown through `display_label`.
    """
    if len(photos) != len(examples) or any(len(images) != len(examples) for images in overlays.values()):
        raise ValueError(f"grad_cam_grid needs one photo and one overlay per model for each of the "
                         f"{len(examples)} examples; got {len(photos)} photos and overlays "
                         + ", ".join(f"{model}: {len(images)}" for model, images in overlays.items()))
    panels = 1 + len(overlays)
    rows = max(1, math.ceil(len(examples) / examples_per_row))
    fig, axes = plt.subplots(rows, panels * examples_per_row, squeeze=False,
                             figsize=(1.75 * panels * examples_per_row, 2.2 * rows + 0.5))
    for ax in axes.flat:
        ax.axis("off")
    for position, photo in enumerate(photos):
        found = examples.iloc[position]
        row, slot = divmod(position, examples_per_row)
        cells = axes[row, slot * panels : (slot + 1) * panels]
        cells[0].imshow(photo)
        cells[0].set_title(f"true: {display_label(found['true_label'])}", fontsize=8)
        for ax, (model, images) in zip(cells[1:], overlays.items()):
            right = bool(found[f"{model} correct"])
            ax.imshow(images[position])
            ax.set_title(f"{display_label(model)}\npredicted: {display_label(found[f'{model} predicted'])}\n"
                         f"p = {found[f'{model} probability']:.2f}, {'right' if right else 'wrong'}",
                         fontsize=8, color="tab:green" if right else "tab:red")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def group_size_histogram(sizes: pd.Series) -> plt.Figure:
    """Bars of how many near-duplicate groups have each size (``sizes``: groups, indexed by size)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(sizes.index.astype(int), sizes.to_numpy(), color="tab:blue", width=0.8)
    ax.set_yscale("log")  # singletons outnumber the rest by far
    ax.set(xlabel="images in the group", ylabel="groups (log scale)", title="Near-duplicate group sizes")
    fig.tight_layout()
    return fig
