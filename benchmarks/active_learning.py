"""Does labelling the most uncertain photos first beat labelling at random? The loop simulated on the default data.

    .venv/bin/python benchmarks/active_learning.py [--params params/default.yaml] [--seeds 10] [--initial 2]
        [--batch 10] [--steps 15] [--cache /tmp/active_learning] [--figure benchmarks/active_learning.png]
        [--write benchmarks/RESULTS.md]

The model is the study's cheapest: the linear probe (`lib.training.probe.fit_probe`, 'balanced'
class weights) on MobileNetV2's frozen pooled features (`lib.training.features.streamed_features`,
ImageNet weights from Keras' cache), computed once and kept in ``--cache`` so that reruns take
seconds. The split is the first round's (its seed), drawn as the audit draws it but with the
feature pairs only (cosine >= ``audit.feature_min_similarity``, grouped by
`lib.data.groups.near_duplicate_groups`; the audit's pHash pairs are left out, they need its hashing
pass). The pool is that round's training and validation images with their labels hidden; the
test split is fixed and never acquired.

Per seed, every strategy starts from the same labelled set (``--initial`` random images per
class) and, ``--steps`` times, fits the probe on what is labelled, scores the test split, and
labels ``--batch`` more pool images:

- ``margin``: the smallest top-1 minus top-2 probability first (`lib.training.acquisition`);
- ``entropy``: the highest entropy first;
- ``random``: uniformly at random;
- ``balanced random``: at random, an equal share from each *predicted* class (what one can do
  without the labels; it over-draws a rare class as soon as the model predicts it at all).

It prints a table (test macro-F1 and rare-class F1 at some label counts, mean and 95 % t-interval
over seeds; the seeds vary the initial labels and the random draws, the test split is the same),
draws the learning curves (``--figure``) and appends the table to ``--write``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lib.core import minority
from lib.training import acquisition, probe  # noqa: E402

STRATEGIES = ("margin", "entropy", "random", "balanced random")


# --------------------------------------------------------------------------------------
# The data: features, labels and the first round's split
# --------------------------------------------------------------------------------------


def cached_features(paths: list[str], image_size: tuple[int, int], cache: Path) -> np.ndarray:
    """MobileNetV2's pooled ImageNet features of ``paths``, computed once per (files, size) into ``cache``."""
    digest = hashlib.sha256(f"{image_size}".encode())
    for path in paths:
        digest.update(f"\n{path}\t{Path(path).stat().st_size}".encode())
    file = Path(cache) / f"features-{digest.hexdigest()[:16]}.npy"
    if not file.is_file():
        from lib.training.features import streamed_features

        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, streamed_features(paths, image_size))
    return np.load(file)


def default_data(params_file: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, list[str], pd.Series]:
    """Features, integer labels, class names and the first round's split of the params' dataset."""
    from lib.core.config import load_params
    from lib.data.groups import grouped_stratified_split, near_duplicate_groups, similar_feature_pairs
    from lib.data.rounds import evaluation_rounds
    from lib.data.sources import load_records

    params = load_params(params_file)
    records = load_records(params.data).sort_values("path", ignore_index=True)
    features = cached_features(records["path"].tolist(), tuple(params.data.image_size), cache)
    class_names = sorted(records["label"].unique())
    labels = records["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    pairs = similar_feature_pairs(features, params.audit.feature_min_similarity)
    groups = near_duplicate_groups(len(records), pairs, labels, params.split.max_group_size,
                                   params.split.max_group_share)
    fractions = (params.split.train, params.split.val, params.split.test)
    split = grouped_stratified_split(records["label"], groups, fractions, evaluation_rounds(params.evaluation).first.seed)
    return features, labels, class_names, split


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def initial_labels(pool_labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random pool positions of every class (all of a class that has fewer), sorted."""
    rng = np.random.default_rng([seed, 0])
    chosen = [rng.choice(np.flatnonzero(pool_labels == c), size=min(per_class, (pool_labels == c).sum()),
                         replace=False) for c in np.unique(pool_labels)]
    return np.sort(np.concatenate(chosen))


def acquire(strategy: str, probabilities: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``probabilities``' rows: the unlabelled pool) of the next ``count`` images to label."""
    count = min(count, len(probabilities))
    if strategy in acquisition.SCORES:
        return acquisition.labelling_order(probabilities, strategy)[0][:count]
    if strategy == "random":
        return rng.choice(len(probabilities), size=count, replace=False)
    if strategy == "balanced random":  # a random image of each predicted class in turn, until count are drawn
        predicted = probabilities.argmax(axis=1)
        queues = [rng.permutation(np.flatnonzero(predicted == c)) for c in rng.permutation(np.unique(predicted))]
        order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
        return np.asarray(order[:count])
    raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")


def simulate(features, labels, pool, test, strategy: str, seed: int, initial: int, batch: int, steps: int,
             rare: int) -> pd.DataFrame:
    """One strategy's learning curve for one seed: per step, the labels used and the test macro-F1 and rare F1.

    ``pool`` and ``test``: positions into ``features``/``labels``; ``rare``: the rare class's index.
    """
    method = minority.METHODS["class_weight"]  # 'balanced' weights: the probe as the study trains it
    n_classes = int(labels.max()) + 1
    labelled = pool[initial_labels(labels[pool], initial, seed)]
    rng = np.random.default_rng([seed, 1])
    rows = []
    for step in range(steps + 1):
        fitted = probe.fit_probe(features[labelled], labels[labelled], method)
        predicted = probe.probabilities(fitted, features[test], n_classes).argmax(axis=1)
        rows.append({"strategy": strategy, "seed": seed, "step": step, "labels": len(labelled),
                     "rare_labelled": int((labels[labelled] == rare).sum()),
                     "labelled": tuple(labelled.tolist()) if step == 0 else None,
                     "macro_f1": f1_score(labels[test], predicted, labels=np.arange(n_classes), average="macro",
                                          zero_division=0),
                     "rare_f1": f1_score(labels[test], predicted, labels=[rare], average="macro", zero_division=0)})
        unlabelled = np.setdiff1d(pool, labelled)
        if step == steps or not len(unlabelled):
            break
        chosen = acquire(strategy, probe.probabilities(fitted, features[unlabelled], n_classes), batch, rng)
        labelled = np.union1d(labelled, unlabelled[chosen])
    return pd.DataFrame(rows)


def curves(features, labels, split: pd.Series, seeds, initial: int, batch: int, steps: int,
           strategies=STRATEGIES) -> pd.DataFrame:
    """Every strategy's learning curve for every seed, on the split's train + val pool and its test split."""
    split = np.asarray(split)
    pool, test = np.flatnonzero(np.isin(split, ["train", "val"])), np.flatnonzero(split == "test")
    rare = int(np.argmin(np.bincount(labels[pool])))
    return pd.concat([simulate(features, labels, pool, test, strategy, seed, initial, batch, steps, rare)
                      for seed in seeds for strategy in strategies], ignore_index=True)


SCORES = {"macro_f1": "test macro-F1", "rare_f1": "rare-class test F1", "rare_labelled": "rare images labelled"}


def interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds and its percentile bootstrap interval (it stays within the scores' range, unlike a t-interval)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean()), float(values.mean())
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, method="percentile",
                             n_resamples=2000, rng=np.random.default_rng(0))
    return float(values.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and label count: each score's mean over seeds and its 95 % interval (columns score, stat)."""
    rows = {key: {(score, stat): value for score in SCORES
                  for stat, value in zip(("mean", "low", "high"), interval(group[score]))}
            for key, group in results.groupby(["strategy", "labels"])}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["strategy", "labels"]
    return table


def paired_differences(results: pd.DataFrame, strategy: str, baselines) -> pd.DataFrame:
    """``strategy`` minus each baseline, seed by seed, each score averaged over the whole curve (its area per
    step): mean and 95 % interval over seeds. The seeds pair the runs: the same initial labels."""
    curve = results.groupby(["strategy", "seed"])[list(SCORES)].mean()
    rows = {baseline: {(score, stat): value for score in SCORES
                       for stat, value in zip(("mean", "low", "high"),
                                              interval(curve.loc[strategy, score] - curve.loc[baseline, score]))}
            for baseline in baselines}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("baseline")


# --------------------------------------------------------------------------------------
# The figure and the table
# --------------------------------------------------------------------------------------


def draw(table: pd.DataFrame, figure: Path, title: str) -> None:
    """Each score against the labels, one line and interval band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCORES), figsize=(13, 3.8), sharex=True)
    for axis, (score, words) in zip(axes, SCORES.items()):
        for strategy in table.index.get_level_values("strategy").unique():
            rows = table.loc[strategy, score]
            axis.plot(rows.index, rows["mean"], marker=".", label=strategy)
            axis.fill_between(rows.index, rows["low"], rows["high"], alpha=0.15)
        axis.set(xlabel="labelled images", ylabel=words)
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    plt.close(fig)


def cell(row: pd.Series, score: str) -> str:
    decimals = 1 if score == "rare_labelled" else 3
    return f"{row[(score, 'mean')]:.{decimals}f} [{row[(score, 'low')]:.{decimals}f}, {row[(score, 'high')]:.{decimals}f}]"


def markdown(table: pd.DataFrame, differences: pd.DataFrame, counts, strategy: str) -> str:
    """Mean [95 % interval] of each score at the given label counts, then ``strategy``'s paired differences."""
    lines = ["| strategy | labels | " + " | ".join(SCORES.values()) + " |", "| --- | ---: |" + " --- |" * len(SCORES)]
    for name in table.index.get_level_values("strategy").unique():
        lines += [f"| {name} | {count} | " + " | ".join(cell(table.loc[(name, count)], s) for s in SCORES) + " |"
                  for count in counts if (name, count) in table.index]
    lines += ["", f"{strategy} minus each baseline, averaged over the curve, paired by seed:", "",
              "| baseline | " + " | ".join(SCORES.values()) + " |", "| --- |" + " --- |" * len(SCORES)]
    lines += [f"| {baseline} | " + " | ".join(cell(row, s) for s in SCORES) + " |"
              for baseline, row in differences.iterrows()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params" / "default.yaml")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--initial", type=int, default=2, help="labelled images per class at the start")
    parser.add_argument("--batch", type=int, default=10, help="images labelled per step")
    parser.add_argument("--steps", type=int, default=15, help="acquisition steps")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/active_learning"), help="the features' cache")
    parser.add_argument("--figure", type=Path, help="write the learning curves to this PNG")
    parser.add_argument("--write", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args(argv)
    for name in ("seeds", "initial", "batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    features, labels, class_names, split = default_data(args.params, args.cache)
    results = curves(features, labels, split, range(args.seeds), args.initial, args.batch, args.steps)
    table = summary(results)
    sizes = split.value_counts().to_dict()
    heading = (f"{len(labels)} images, {len(class_names)} classes; pool {sizes['train'] + sizes['val']}, "
               f"test {sizes['test']}; {args.seeds} seeds, {args.initial} per class to start, "
               f"+{args.batch} per step")
    counts = sorted(results["labels"].unique())
    shown = counts[::4] + ([counts[-1]] if (len(counts) - 1) % 4 else [])
    differences = paired_differences(results, acquisition.DEFAULT_SCORE,
                                     [s for s in STRATEGIES if s != acquisition.DEFAULT_SCORE])
    text = markdown(table, differences, shown, acquisition.DEFAULT_SCORE)
    print(heading, text, sep="\n")
    if args.figure:
        draw(table, args.figure, f"Active learning with the linear probe ({heading})")
    if args.write:
        with open(args.write, "a") as handle:
            handle.write(f"\n## {date.today()}: `benchmarks/active_learning.py` ({heading})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
