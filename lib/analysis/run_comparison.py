"""Finished runs side by side (a sweep's, or any two made with different params), read from their folders.

- `params_that_differ`: the params whose values are not the same in every run (``params.json``);
- each model's test metrics over the rounds with their bootstrap intervals (each run's ``comparison/summary.csv``),
  macro-F1 per round and the minority-class method chosen (``comparison/per_round.csv``), step times
  (``steps.json``);
- `paired_tests`: for two runs that drew the same split in a round (identical ``split.csv``), McNemar's exact test
  (`lib.analysis.stats.mcnemar_exact`) between the runs' predictions of each model on the same test images: did
  changing the params change which images the model gets right more than chance allows?

Nothing is computed from scratch that a run already computed; the page is `lib.report.run_comparison`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.analysis.stats import mcnemar_exact
from lib.core.overrides import changed_fields, dotted_overrides
from lib.core.paths import RunPaths
from lib.core.study import MODELS

HEADLINE = ("accuracy", "balanced accuracy", "macro-F1")  # the comparison's rows, as `lib.analysis.compare` names them


@dataclass
class RunComparison:
    """What the comparison page shows; every table's columns or rows are the runs, in the order given."""

    runs: list[str]  # run names (their folders' names)
    params: pd.DataFrame  # field x run: the values that differ between the runs
    metrics: pd.DataFrame  # long: run, model, metric, mean, std, low, high (over the rounds)
    per_round: pd.DataFrame  # long: run, round, model, method, macro-F1
    steps: pd.DataFrame  # step x run: seconds (NaN: not in that run), and reused x run in `reused`
    reused: pd.DataFrame  # step x run: whether the step was reused
    paired: pd.DataFrame  # model, round, run A, run B, images, only A right, only B right, p-value
    unpaired: list[str]  # "run A / run B, round r" where the splits differ (no paired test)

    def swept(self, metric: str = "macro-F1") -> pd.DataFrame:
        """Per run and model: the differing params' values (``setting``) and the metric's mean and interval."""
        rows = self.metrics[self.metrics["metric"] == metric].copy()
        labels = {run: ", ".join(f"{field}={self.params.loc[field, run]}" for field in self.params.index) or run
                  for run in self.runs}
        rows["setting"] = rows["run"].map(labels)
        if len(self.params.index) == 1:  # one setting swept: its value, a number where it is one
            values = self.params.iloc[0]
            rows["value"] = rows["run"].map(lambda run: _number(values[run]))
        return rows.reset_index(drop=True)


def _number(text):
    try:
        return float(json.loads(text))
    except (TypeError, ValueError, json.JSONDecodeError):
        return text


def _read(file: Path, default=None):
    return json.loads(file.read_text()) if file.is_file() else default


def params_that_differ(folders: list[Path]) -> pd.DataFrame:
    """Field x run: every param (dotted name) whose value is not the same in every run, as JSON text."""
    values = {Path(f).name: _read(RunPaths(Path(f)).params_used, {}) for f in folders}
    first = next(iter(values.values()))
    fields = sorted({name for v in values.values() for name in changed_fields(first, v)} - {"run_name"})
    flat = {run: dotted_overrides(v) for run, v in values.items()}
    table = pd.DataFrame({run: [json.dumps(flat[run].get(name)) for name in fields] for run in values},
                         index=pd.Index(fields, name="param"))
    return table


def _require(run: RunPaths) -> None:
    for file in (run.steps, run.params_used, run.comparison_table("summary")):
        if not file.is_file():
            raise FileNotFoundError(f"{run.root} is not a finished run: {file.name} is missing (run ./run_all.sh)")


def paired_tests(folders: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """McNemar's exact test per model and round between every two runs that share that round's split."""
    rows, unpaired = [], []
    for a, b in itertools.combinations([RunPaths(Path(f)) for f in folders], 2):
        rounds = sorted({p.name for p in a.rounds_dir.iterdir()} & {p.name for p in b.rounds_dir.iterdir()})
        for name in rounds:
            split_a, split_b = a.round(name).split_manifest, b.round(name).split_manifest
            if not split_a.is_file() or split_a.read_bytes() != split_b.read_bytes():
                unpaired.append(f"{a.root.name} / {b.root.name}, round {name}")
                continue
            for model, title in ((m.name, m.title) for m in MODELS.values()):
                pa, pb = (pd.read_csv(r.round(name).model(model).predictions, keep_default_na=False)
                          .set_index("relpath") for r in (a, b))
                both = pa.merge(pb, left_index=True, right_index=True, suffixes=("_a", "_b"))
                test = mcnemar_exact(both["true_label_a"] == both["predicted_label_a"],
                                     both["true_label_b"] == both["predicted_label_b"])
                rows.append({"model": title, "round": name, "run A": a.root.name, "run B": b.root.name,
                             "images": len(both), "only A right": test["only_a"], "only B right": test["only_b"],
                             "p-value": test["p_value"]})
    return pd.DataFrame(rows), unpaired


def compare_runs(folders: list[str | Path]) -> RunComparison:
    """The comparison of finished run folders (at least two, distinct)."""
    folders = [Path(f).resolve() for f in folders]
    if len(folders) < 2 or len(set(folders)) != len(folders):
        raise ValueError(f"compare at least two distinct runs, got {[str(f) for f in folders]}")
    runs = [RunPaths(f) for f in folders]
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"runs are told apart by their names: {names} repeats one")
    for run in runs:
        _require(run)
    metrics = pd.concat([pd.read_csv(r.comparison_table("summary")).assign(run=r.root.name) for r in runs])
    metrics = metrics[metrics["metric"].isin(HEADLINE)][["run", "model", "metric", "mean", "std", "low", "high"]]
    per_round = pd.concat([pd.read_csv(r.comparison_table("per_round"), keep_default_na=False).assign(run=r.root.name)
                           for r in runs])[["run", "round", "model", "method", "macro-F1"]]
    steps = {r.root.name: _read(r.steps, {}) for r in runs}
    labels = list(dict.fromkeys(label for record in steps.values() for label in record))
    seconds = pd.DataFrame({run: [record.get(label, {}).get("seconds") for label in labels]
                            for run, record in steps.items()}, index=pd.Index(labels, name="step"), dtype=float)
    reused = pd.DataFrame({run: [bool(record.get(label, {}).get("reused")) for label in labels]
                           for run, record in steps.items()}, index=seconds.index)
    paired, unpaired = paired_tests(folders)
    return RunComparison(names, params_that_differ(folders), metrics.reset_index(drop=True),
                         per_round.reset_index(drop=True), seconds, reused, paired, unpaired)
