"""Every run in MLflow: one parent run per study run, one child run per training, all read from the run folder.

The run folders are the truth, and MLflow is a view of them: everything logged here is read from a finished
run's files (``params.json``, ``steps.json``, each model folder's ``history.csv``, ``metrics.json``,
``methods.csv``, ``predictions.csv``, the comparison's tables, the report), never computed anew.

- **Parent run** (named ``run_name``): tags ``study.commit``, ``study.backend``, ``study.device``,
  ``study.params_file``, ``study.overrides``, ``study.data_listing_sha256``, ``study.kind`` (published or
  scratch), ``study.run_folder`` (a published run's link) and ``study.run_version`` (the version it was); every
  param by dotted name; each model's test metrics over the rounds
  (``<model>.test_macro_f1`` and its interval ``.low``/``.high``); each step's seconds; for each step its key
  (``step_key/<step>``) and the MLflow run(s) that computed it (``step_run/<step>``); artefacts: the report
  (HTML, PDF) and the first round's confusion matrices.
- **Child run** per round x model x minority-class method trained (``<round>/<model>/<method>``): the
  step's params, its key (tag ``study.step_key``), the chosen method's per-epoch history (step = epoch), kept
  epoch and test metrics (accuracy, macro-F1, F1 per class, the linear probe's), the other methods' validation
  and test scores (``methods.csv``), and the step's seconds.
- **Reuse:** a step whose key the store already holds gets no new child: the parent refers to the runs that
  computed it. So a run that changed nothing logs a parent and no child, and a sweep logs each training once.

When: ``./run_all.sh`` (`lib.run.run_study`) calls `begin` once the params are valid. It starts a worker
process (``python -m lib.pipeline.tracking``) that imports MLflow and opens the store while the steps run, so
that the run itself waits only for the logging. `Tracker.published` hands it the published folder. A run that
fails or is interrupted (`marks_failed_runs`) is logged FAILED with its error, never FINISHED; a runner killed
outright closes the worker's input, and the worker logs FAILED then. Only the process that writes the run logs
(process 0 of a run across processes); ``--jobs`` logs each step once, after the run. A notebook that computes
a step by hand into a scratch run logs it there (`log_step_by_hand`). Where the store is: `lib.core.tracking_store`.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd

from lib.core.config import load_params
from lib.core.overrides import dotted_overrides, override_words
from lib.core.paths import PROJECT_ROOT, RunPaths
from lib.core.study import MODELS, PROBE_MODEL, PROBE_NAME
from lib.core.provenance import git_commit
from lib.core.tracking_store import SETTINGS_FILE, Store, quoted, store_uri, write_settings
from lib.pipeline.steps import STEPS

MAX_VALUE = 6000  # MLflow's longest param value
_active: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("tracker", default=None)


def metric_name(text: str) -> str:
    """``text`` as an MLflow metric, param or tag name (letters, digits, ``_ - . / :`` and spaces)."""
    return re.sub(r"[^\w./: -]", "_", str(text))


def _value(value) -> str:
    return (value if isinstance(value, str) else json.dumps(value))[:MAX_VALUE]


def flat_params(values: dict, prefixes: tuple[str, ...] = ("",)) -> dict[str, str]:
    """Params (``params.json``) by dotted name, as MLflow's text values; only names under ``prefixes``."""
    return {name: _value(value) for name, value in dotted_overrides(values).items()
            if any(name == p or name.startswith(f"{p}.") or not p for p in prefixes)}


def _read_json(file: Path, default=None):
    return json.loads(file.read_text()) if file.is_file() else default


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class RunLogger:
    """Logs one run folder to a `Store`: its parent run, and a child per training not logged before."""

    def __init__(self, store: Store, run: RunPaths, values: dict | None = None):
        from mlflow.entities import Metric, Param, RunTag

        self.store, self.client, self.run = store, store.client, run
        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        self.steps = _read_json(run.steps, {})
        self.values = values if values is not None else _read_json(run.params_used, {})

    def log(self, run_id: str, step: int = 0, metrics: dict | None = None, params: dict | None = None,
            tags: dict | None = None) -> None:
        """Metrics (name: value, or name: [(step, value), ...]), params and tags in MLflow's batches."""
        timestamp = int(pd.Timestamp.now().timestamp() * 1000)
        entries = []
        for name, value in (metrics or {}).items():
            series = value if isinstance(value, list) else [(step, value)]
            entries += [self.Metric(metric_name(name), float(v), timestamp, int(s)) for s, v in series if pd.notna(v)]
        params = [self.Param(metric_name(k), v) for k, v in (params or {}).items()]
        tags = [self.RunTag(k, _value(v)) for k, v in (tags or {}).items()]
        for chunk in _batches(entries, 1000):
            self.client.log_batch(run_id, metrics=chunk)
        for chunk in _batches(params, 100):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _batches(tags, 100):
            self.client.log_batch(run_id, tags=chunk)

    # ---- the parent run

    def create_parent(self, name: str, tags: dict, status: str = "RUNNING") -> str:
        parent = self.client.create_run(self.store.experiment_id, run_name=name,
                                        tags={k: _value(v) for k, v in tags.items()})
        self.log(parent.info.run_id, params=flat_params(self.values))
        if status != "RUNNING":
            self.client.set_terminated(parent.info.run_id, status)
        return parent.info.run_id

    def log_parent_results(self, parent_id: str) -> None:
        """The comparison's summary over rounds, the steps' seconds, keys and computing runs, the report."""
        metrics, tags = {}, {}
        summary = self.run.comparison_table("summary")
        if summary.is_file():
            names = {model.title: model.name for model in MODELS.values()} | {PROBE_NAME: "probe"}
            for row in pd.read_csv(summary).itertuples(index=False):
                key = f"{names.get(row.model, row.model)}.test_{_metric_key(row.metric)}"
                metrics |= {key: row.mean, f"{key}.low": row.low, f"{key}.high": row.high}
        for label, entry in self.steps.items():
            metrics[f"step_seconds/{label}"] = entry.get("seconds")
            if entry.get("key"):
                tags[f"step_key/{metric_name(label)}"] = entry["key"]
                tags[f"step_reused/{metric_name(label)}"] = str(bool(entry.get("reused"))).lower()
        self.log(parent_id, metrics=metrics, tags=tags)
        for file in (self.run.report_html, self.run.report_pdf, self.run.comparison_table("confusion")):
            if file.is_file():
                self.client.log_artifact(parent_id, str(file))

    def refer_to_computing_runs(self, parent_id: str) -> None:
        """Each step's ``step_run/<step>``: its child runs (a training), or the parent run that computed it."""
        tags = {}
        for label, entry in self.steps.items():
            if not entry.get("key"):
                continue
            children = self.children_of_key(entry["key"])
            if children:
                tags[f"step_run/{metric_name(label)}"] = ",".join(children)
            elif label.count("/") == 0:  # a run-wide step: the first parent that recorded its key computed it
                found = self.store.search(f"tags.`step_key/{quoted(metric_name(label))}` = '{entry['key']}'",
                                          order_by=["attributes.start_time ASC"], max_results=1)
                tags[f"step_run/{metric_name(label)}"] = found[0].info.run_id if found else parent_id
        self.log(parent_id, tags=tags)

    # ---- the children: one per training

    def children_of_key(self, key: str) -> list[str]:
        return [r.info.run_id for r in self.store.search(f"tags.`study.step_key` = '{key}'")]

    def log_trainings(self, parent_id: str, kind: str) -> int:
        """A child run per method trained by each model step whose key the store does not hold; how many."""
        created = 0
        for planned_label, entry in self.steps.items():
            parts = planned_label.split("/")
            step = next((s for s in STEPS if s.model and s.notebook == parts[-1]), None)
            if step is None or len(parts) != 3 or not entry.get("key") or self.children_of_key(entry["key"]):
                continue
            created += self.log_step_trainings(parent_id, step, parts[1], entry, kind)
        return created

    def log_step_trainings(self, parent_id: str, step, round_name: str, entry: dict, kind: str) -> int:
        files = self.run.round(round_name).model(step.model)
        metrics = _read_json(files.metrics)
        if metrics is None:
            return 0
        chosen = metrics["minority_method"]
        methods = pd.read_csv(files.methods) if files.methods.is_file() else pd.DataFrame({"method": [chosen]})
        params = flat_params(self.values, step.uses)
        for method in dict.fromkeys(methods["method"]):
            tags = {"mlflow.parentRunId": parent_id, "study.step": f"rounds/{round_name}/{step.notebook}",
                    "study.step_key": entry["key"], "study.round": round_name, "study.model": step.model,
                    "study.method": method, "study.chosen": str(method == chosen).lower(), "study.kind": kind,
                    "study.run_folder": str(self.run.root)}
            child = self.client.create_run(self.store.experiment_id, run_name=f"{round_name}/{step.model}/{method}",
                                           tags=tags)
            child_id = child.info.run_id
            scores = _method_scores(methods[methods["method"] == method])
            self.log(child_id, params=params | {"minority.method": method},
                     metrics=scores | {"step_seconds": entry.get("seconds")})
            if method == chosen:
                self.log_chosen(child_id, files, metrics)
            self.client.set_terminated(child_id, "FINISHED")
        return len(methods["method"].unique())

    def log_chosen(self, child_id: str, files, metrics: dict) -> None:
        """The kept training: its per-epoch history, kept epoch, test metrics, the probe's, its confusion matrix."""
        history = pd.read_csv(files.history)
        series = {}
        for column in history.columns.drop(["epoch", "phase", "best"], errors="ignore"):
            values = pd.to_numeric(history[column], errors="coerce")
            series[column] = [(int(e), v) for e, v in zip(history["epoch"], values)]
        test = {f"test_{name}": metrics[name] for name in ("accuracy", "balanced_accuracy", "macro_f1",
                                                            "weighted_f1", "loss") if name in metrics}
        test |= {f"test_f1/{name}": scores["f1"] for name, scores in metrics.get("per_class", {}).items()}
        probe = _read_json(files.probe_metrics)
        if probe is not None and files.root.name == PROBE_MODEL.name:
            test |= {f"probe.test_{name}": probe[name] for name in ("accuracy", "balanced_accuracy", "macro_f1")
                     if name in probe}
        test |= {"kept_epoch": metrics.get("best_epoch"), "training_seconds": metrics.get("training_seconds")}
        self.log(child_id, metrics=series | test)
        predictions = pd.read_csv(files.predictions, keep_default_na=False)
        confusion = pd.crosstab(predictions["true_label"], predictions["predicted_label"])
        self.client.log_text(child_id, confusion.to_csv(), "confusion_matrix.csv")


def _metric_key(display: str) -> str:
    """A comparison metric's display name as a metric name: "macro-F1" -> "macro_f1", "F1: beta" -> "f1/beta"."""
    if display.startswith("F1: "):
        return f"f1/{display[4:]}"
    return display.replace("-", "_").replace(" ", "_").lower()


def _method_scores(rows: pd.DataFrame) -> dict:
    """A method's validation (and first-round test) scores from ``methods.csv`` (``val_macro_f1``, ...)."""
    scores = {}
    for row in rows.to_dict("records"):
        split = row.get("split", "val")
        scores |= {f"{split}_{name}": value for name, value in row.items()
                   if name not in ("method", "split", "chosen", "minority_class") and isinstance(value, (int, float))
                   and not isinstance(value, bool)}
    return scores


def run_tags(params, kind: str, run_dir: Path, params_file, overrides, backend: str, data_listing: str | None) -> dict:
    """The parent run's tags."""
    first = next(iter(sorted(Path(run_dir).glob("rounds/*/*/metrics.json"))), None)
    runtime = _read_json(first, {}).get("runtime", {}) if first else {}
    # the folder readers open (a published run's link, not the version it points to now) and that version
    return {"study.kind": kind, "study.run_folder": os.path.abspath(run_dir),
            "study.run_version": Path(run_dir).resolve().name, "study.commit": git_commit(),
            "study.backend": backend, "study.device": runtime.get("description", "unknown"),
            "study.params_file": str(params_file), "study.overrides": " ".join(override_words(overrides)) or "none",
            "study.data_listing_sha256": hashlib.sha256((data_listing or "").encode()).hexdigest(),
            "study.fingerprint": params.fingerprint()}


def log_finished_run(store: Store, run: RunPaths, tags: dict) -> str:
    """Log a finished run folder: its parent run, its new trainings, references to reused ones; FINISHED."""
    logger = RunLogger(store, run)
    with store.writing():
        parent_id = logger.create_parent(run.root.name, tags)
        logger.log_trainings(parent_id, tags["study.kind"])
        logger.refer_to_computing_runs(parent_id)
        logger.log_parent_results(parent_id)
        store.client.set_terminated(parent_id, "FINISHED")
    return parent_id


def log_failed_run(store: Store, params, tags: dict, error: str) -> str:
    """A run that failed or was interrupted: its parent run with its params and the error, FAILED."""
    run = RunPaths(Path(tags["study.run_folder"]))
    with store.writing():
        parent_id = RunLogger(store, run, params.study_values()).create_parent(
            params.run_name, tags | {"study.error": error[-MAX_VALUE:]}, status="FAILED")
    return parent_id


# --------------------------------------------------------------------------------------
# ./run_all.sh: a worker process that logs the run once it is published, or marks it failed
# --------------------------------------------------------------------------------------


class Tracker:
    """The worker logging one run of ``./run_all.sh``; `begin` starts it, `published` or `failed` ends it."""

    def __init__(self, process: subprocess.Popen, params):
        self.process, self.params = process, params

    def _finish(self, event: dict) -> None:
        _active.set(None)
        try:
            self.process.stdin.write(json.dumps(event) + "\n")
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            status = self.process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = "killed after 600 s"
        if status != 0:
            print(f"warning: the run was not logged to MLflow (the tracking worker ended with {status}); the "
                  "run itself is complete", file=sys.stderr, flush=True)

    def published(self, run: RunPaths, data_listing: str) -> None:
        """Log the published run folder ``run`` (and wait for it)."""
        self._finish({"event": "published", "run_dir": str(run.root), "data_listing": data_listing})

    def failed(self, error: BaseException) -> None:
        text = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        self._finish({"event": "failed", "error": text})


def begin(params, params_file, overrides, backend: str, staging: RunPaths, kind: str = "published") -> Tracker | None:
    """Start logging a run of ``./run_all.sh`` (None when ``tracking.enabled`` is false): the worker opens the
    store now; the run folder records where it is logged (`lib.core.tracking_store.write_settings`)."""
    if not params.tracking.enabled:
        (staging.root / SETTINGS_FILE).unlink(missing_ok=True)  # a copied earlier run's: this run is not logged
        return None
    uri = store_uri(params.tracking, params.reports_dir)
    write_settings(staging.root, uri, params.tracking.experiment)
    start = {"uri": uri, "experiment": params.tracking.experiment, "params_file": str(params_file),
             "overrides": dotted_overrides(overrides), "backend": backend, "kind": kind,
             "run_dir": str(staging.root.parent / params.run_name)}
    process = subprocess.Popen([sys.executable, "-m", "lib.pipeline.tracking"], stdin=subprocess.PIPE, text=True,
                               cwd=PROJECT_ROOT)
    process.stdin.write(json.dumps(start) + "\n")
    process.stdin.flush()
    tracker = Tracker(process, params)
    _active.set(tracker)
    return tracker


def marks_failed_runs(run_study):
    """``run_study`` that, when it fails or is interrupted after `begin`, logs its run FAILED, then re-raises."""
    @functools.wraps(run_study)
    def wrapper(*args, **kwargs):
        token = _active.set(None)
        try:
            return run_study(*args, **kwargs)
        except BaseException as error:
            tracker = _active.get()
            if tracker is not None:
                tracker.failed(error)
            raise
        finally:
            _active.reset(token)

    wrapper.__signature__ = inspect.signature(run_study)
    return wrapper


def _work(lines) -> None:
    """The worker: open the store, then log what the runner's next line says (EOF: the runner was killed)."""
    start = json.loads(next(lines))
    params = load_params(start["params_file"], start["overrides"])
    store = Store(start["uri"], start["experiment"])
    event = json.loads(next(lines, "null") or "null") or {"event": "failed",
                                                            "error": "the runner stopped without a word (killed?)"}
    listing = event.get("data_listing")
    tags = run_tags(params, start["kind"], Path(event.get("run_dir", start["run_dir"])), start["params_file"],
                    start["overrides"], start["backend"], listing)
    if event["event"] == "published":
        log_finished_run(store, RunPaths(Path(event["run_dir"])), tags)
    else:
        log_failed_run(store, params, tags, event["error"])


# --------------------------------------------------------------------------------------
# A notebook run by hand: the step it computed into a scratch run
# --------------------------------------------------------------------------------------


def log_step_by_hand(params, run: RunPaths, label: str, key: str, backend: str) -> None:
    """Log a step a notebook computed by hand into the scratch run ``run``: the scratch run's parent (created
    the first time), a child per training of a model step, the step's key; a logging failure only warns."""
    if not params.tracking.enabled:
        return
    try:
        store = Store(store_uri(params.tracking, params.reports_dir), params.tracking.experiment)
        logger = RunLogger(store, run)
        with store.writing():
            parent = store.parent_of_folder(run.root, status=None)
            if parent is None:
                tags = run_tags(params, "scratch", run.root, "(a notebook run by hand)", None, backend, None)
                parent_id = logger.create_parent(params.run_name, tags, status="FINISHED")
            else:
                parent_id = parent.info.run_id
            logger.steps = {label: logger.steps.get(label, {}) | {"key": key}}
            logger.log_trainings(parent_id, "scratch")
            logger.refer_to_computing_runs(parent_id)
            logger.log(parent_id, tags={f"step_key/{metric_name(label)}": key})
    except Exception as error:  # the view must never stop the notebook: the scratch run holds the results
        print(f"warning: this step was not logged to MLflow: {type(error).__name__}: {error}", file=sys.stderr)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the runner, which then says how it stopped
    try:
        _work(iter(sys.stdin))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
