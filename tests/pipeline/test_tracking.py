"""Runs in MLflow, sweeps and runs compared: the tiny study logged, reuse, failures, the store shared, the UI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import copy_of_the_study, write_params

from lib import run
from lib.core.config import ParamsError, load_params, parse_params
from lib.core.paths import PROJECT_ROOT, RunPaths
from lib.core.sweeps import sweep_overrides, swept_values
from lib.core.tracking_store import Store, _Retrying, default_uri, store_uri
from lib.pipeline import tracking

sys.path.insert(0, str(PROJECT_ROOT / "tools"))
import app_browser  # noqa: E402

EXPERIMENT = "product-image-study"


def _store(reports: Path) -> Store:
    return Store(default_uri(reports), EXPERIMENT)


def _parents(store: Store, name: str) -> list:
    return [r for r in store.search(f"attributes.run_name = '{name}'") if "mlflow.parentRunId" not in r.data.tags]


def _children(store: Store) -> list:
    return [r for r in store.search("") if "mlflow.parentRunId" in r.data.tags]


# ---- the params and the sweep's expansion


def test_tracking_params_are_validated_and_shape_no_result(tmp_path, monkeypatch):
    with pytest.raises(ParamsError, match=r"tracking.uri: String should match pattern"):
        parse_params({"tracking": {"uri": "reports/mlruns.db"}})
    with pytest.raises(ParamsError, match=r"tracking.enable: unknown key"):
        parse_params({"tracking": {"enable": False}})
    off = parse_params({"tracking": {"enabled": False, "uri": "sqlite:///elsewhere.db"}})
    assert off.fingerprint() == parse_params({}).fingerprint(), "where a run is logged changes no step's key"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store_uri(parse_params({}).tracking, tmp_path) == "http://127.0.0.1:5999"
    elsewhere = f"sqlite:///{PROJECT_ROOT / 'elsewhere.db'}"
    assert store_uri(off.tracking, tmp_path) == elsewhere, "the param wins, from the root"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert store_uri(parse_params({}).tracking, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlruns.db'}"


def test_a_sweep_expands_to_every_combination_named_from_its_values():
    runs = sweep_overrides("tiny", ["training.batch_size=4"], ["cnn.dropout=0.3,0.5", "evaluation.seeds=[1,2],[3]"])
    assert [r["run_name"] for r in runs] == ["tiny-cnn.dropout_0.3-evaluation.seeds_1_2",
                                             "tiny-cnn.dropout_0.3-evaluation.seeds_3",
                                             "tiny-cnn.dropout_0.5-evaluation.seeds_1_2",
                                             "tiny-cnn.dropout_0.5-evaluation.seeds_3"]
    assert runs[1] == {"training.batch_size": 4, "cnn.dropout": 0.3, "evaluation.seeds": [3],
                       "run_name": "tiny-cnn.dropout_0.3-evaluation.seeds_3"}
    assert swept_values(["report.subject=shelf photos,fruit"]) == {"report.subject": ["shelf photos", "fruit"]}
    for bad, message in ((["cnn.dropout"], "expected NAME=VALUE,VALUE"), (["cnn.dropout=0.3,0.3"], "repeated"),
                         (["run_name=a,b"], "cannot be swept"), (["cnn.dropout=0.3", "cnn.dropout=0.4"], "twice")):
        with pytest.raises(ValueError, match=message):
            sweep_overrides("tiny", [], bad)
    with pytest.raises(ValueError, match="both set"):
        sweep_overrides("tiny", ["cnn.dropout=0.1"], ["cnn.dropout=0.3,0.5"])


def test_a_sweep_value_out_of_range_stops_before_any_run_with_the_set_message(tiny_params_file, capsys):
    assert run.main([str(tiny_params_file), "--sweep", "cnn.dropout=0.3,1.5"]) == 2
    error = capsys.readouterr().err
    assert "cnn.dropout: Input should be less than 1 (got 1.5)" in error and "run_name" in error
    assert not (tiny_params_file.parent / "reports").exists(), "nothing ran"


# ---- the store: failures, a killed runner, writers side by side


def _failing_steps(*args, **kwargs):
    raise RuntimeError("a step broke")


def _interrupted_steps(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("steps, error", [(_failing_steps, "RuntimeError: a step broke"),
                                          (_interrupted_steps, "interrupted")])
def test_a_failed_or_interrupted_run_is_marked_failed_never_finished(tiny_params_file, monkeypatch, steps, error):
    monkeypatch.setattr(run, "run_steps", steps)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        run.run_study(tiny_params_file)
    store = _store(load_params(tiny_params_file).reports_dir)
    [parent] = _parents(store, "tiny")
    assert parent.info.status == "FAILED" and parent.data.tags["study.error"] == error
    assert parent.data.params["cnn.dropout"] == "0.5" and parent.data.tags["study.kind"] == "published"
    assert not _children(store)


def test_a_runner_killed_outright_leaves_its_run_failed(tiny_params_file, tmp_path):
    params = load_params(tiny_params_file)
    staging = tmp_path / "reports" / ".staging-tiny"
    staging.mkdir(parents=True)
    tracker = tracking.begin(params, tiny_params_file, None, "tensorflow", run.RunPaths(staging))
    tracker.process.stdin.close()  # what the worker sees when its runner is killed: its input ends
    assert tracker.process.wait(timeout=300) == 0
    [parent] = _parents(_store(params.reports_dir), "tiny")
    assert parent.info.status == "FAILED" and "without a word" in parent.data.tags["study.error"]


def _finished_folder(root: Path, name: str) -> Path:
    """A run folder holding only its params and steps (no training): what a parent run is made of."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(parse_params({"run_name": name}).study_values()))
    (folder / "steps.json").write_text(json.dumps({"01_data_audit.ipynb": {"key": name, "seconds": 1.0,
                                                                            "reused": False}}))
    return folder


_LOG_MANY = """
import sys
from pathlib import Path
from lib.core.paths import RunPaths
from lib.core.tracking_store import Store
from lib.pipeline import tracking
store = Store(sys.argv[1], "product-image-study")
for folder in sys.argv[2:]:
    tracking.log_finished_run(store, RunPaths(Path(folder)), {"study.kind": "published",
                              "study.run_folder": folder})
"""


def test_two_processes_logging_at_once_into_a_new_store_leave_it_whole(tmp_path):
    folders = [[str(_finished_folder(tmp_path, f"run{p}{i}")) for i in range(4)] for p in range(2)]
    uri = default_uri(tmp_path)
    processes = [subprocess.Popen([sys.executable, "-c", _LOG_MANY, uri, *group], cwd=PROJECT_ROOT,
                                  stderr=subprocess.PIPE, text=True) for group in folders]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert sqlite3.connect(tmp_path / "mlruns.db").execute("pragma integrity_check").fetchone() == ("ok",)
    runs = _store(tmp_path).search("")
    assert sorted(r.info.run_name for r in runs) == sorted(Path(f).name for group in folders for f in group)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_exported_models_are_logged_to_their_run_and_registered_with_their_test_metrics(tmp_path):
    from lib.core.tracking_store import write_settings
    from lib.deploy.registry import register_exports

    folder = _finished_folder(tmp_path, "tiny")
    store = _store(tmp_path)
    parent_id = tracking.log_finished_run(store, RunPaths(folder), {"study.kind": "published",
                                                                    "study.run_folder": str(folder)})
    (folder / "export" / "cnn").mkdir(parents=True)
    (folder / "export" / "cnn" / "model.json").write_text("{}")
    described = {"cnn": {"test_metrics": {"macro_f1": 0.75, "per_class": {"beta": {"f1": 0.5}}}}}
    assert register_exports(folder, described) == [], "a run that was not logged registers nothing"
    write_settings(folder, default_uri(tmp_path), EXPERIMENT)
    assert register_exports(folder, described) == ["tiny.cnn version 1"]
    [version] = store.client.search_model_versions("name = 'tiny.cnn'")
    assert version.run_id == parent_id and version.tags == {"test_macro_f1": "0.75", "test_f1/beta": "0.5"}
    assert [a.path for a in store.client.list_artifacts(parent_id, "export/cnn")] == ["export/cnn/model.json"]


def test_a_busy_database_is_tried_again():
    calls = []

    class Busy:
        def get_run(self, run_id):
            calls.append(run_id)
            if len(calls) < 3:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            return run_id

    assert _Retrying(Busy()).get_run("r") == "r" and len(calls) == 3


# ---- the tiny study in the store


def _expected_children(run_dir: Path) -> dict[str, str]:
    """Child run name -> its step's key, from the run folder's files."""
    steps = json.loads((run_dir / "steps.json").read_text())
    expected = {}
    for metrics_file in sorted(run_dir.glob("rounds/*/*/metrics.json")):
        folder, round_name = metrics_file.parent, metrics_file.parent.parent.name
        notebook = {"cnn": "02_cnn.ipynb", "mobilenetv2": "03_mobilenetv2.ipynb"}[folder.name]
        key = steps[f"rounds/{round_name}/{notebook}"]["key"]
        methods = (pd.read_csv(folder / "methods.csv")["method"].unique() if (folder / "methods.csv").is_file()
                   else [json.loads(metrics_file.read_text())["minority_method"]])
        expected |= {f"{round_name}/{folder.name}/{method}": key for method in methods}
    return expected


@pytest.mark.slow
def test_the_tiny_study_logs_one_parent_and_a_child_per_training_with_its_metrics(tiny_study):
    _, run_dir, record, _ = tiny_study
    store = _store(run_dir.parent)
    [parent] = _parents(store, "tiny")
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["study.kind"] == "published" and tags["study.run_folder"] == str(run_dir)
    assert tags["study.run_version"] == run_dir.resolve().name != run_dir.name
    assert tags["study.backend"] and tags["study.device"] != "unknown" and tags["study.commit"]
    assert tags["step_key/01_data_audit.ipynb"] == record["01_data_audit.ipynb"]["key"]
    summary = pd.read_csv(run_dir / "comparison" / "summary.csv").set_index(["model", "metric"])
    assert parent.data.metrics["cnn.test_macro_f1"] == pytest.approx(summary.loc[("Custom CNN", "macro-F1"), "mean"])
    assert {a.path for a in store.client.list_artifacts(parent.info.run_id)} >= {"report.html", "report.pdf",
                                                                                   "confusion.csv"}
    children = {c.info.run_name: c for c in _children(store)}
    expected = _expected_children(run_dir)
    assert len(expected) == 8 and sorted(children) == sorted(expected)
    for name, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert child.data.tags["study.step_key"] == expected[name]
    metrics = json.loads((run_dir / "rounds/seed-1/mobilenetv2/metrics.json").read_text())
    chosen = children[f"seed-1/mobilenetv2/{metrics['minority_method']}"]
    assert chosen.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert chosen.data.metrics["kept_epoch"] == metrics["best_epoch"]
    assert "probe.test_macro_f1" in chosen.data.metrics and chosen.data.params["mobilenet_v2.dropout"] == "0.5"
    history = pd.read_csv(run_dir / "rounds/seed-1/mobilenetv2/history.csv")
    logged = store.client.get_metric_history(chosen.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in logged] == [(e, pytest.approx(v))
                                                   for e, v in zip(history.epoch, history.val_loss)]
    assert json.loads((run_dir / "tracking.json").read_text())["uri"] == default_uri(run_dir.parent)


@pytest.mark.slow
def test_a_second_run_with_nothing_changed_logs_no_new_child(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    store = _store(reports)
    before = {c.info.run_id for c in _children(store)}
    run.run_study(write_params(tmp_path / "tiny.yaml", values))
    assert {c.info.run_id for c in _children(store)} == before
    newest = max(_parents(store, "tiny"), key=lambda r: r.info.start_time)
    assert newest.info.status == "FINISHED" and len(_parents(store, "tiny")) == 2
    referred = {i for k, v in newest.data.tags.items() if k.startswith("step_run/rounds/") for i in v.split(",")}
    assert referred == before, "the new parent refers to the children that computed its trainings"


@pytest.mark.slow
def test_two_runs_differing_in_one_set_are_compared_and_the_page_names_that_field(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    params_file = write_params(tmp_path / "tiny.yaml", values)
    run.run_study(params_file, overrides=["cnn.dropout=0.3", "run_name=tiny-b"], reuse_from=reports / "tiny")
    from lib.report import run_comparison

    assert run_comparison.main(["tiny", "tiny-b", "--reports", str(reports)]) == 0
    out = reports / "comparisons" / "tiny-vs-tiny-b"
    assert pd.read_csv(out / "params.csv")["param"].tolist() == ["cnn.dropout"]
    html = (out / "comparison.html").read_text()
    assert "cnn.dropout" in html and (out / "comparison.pdf").is_file()
    paired = pd.read_csv(out / "paired.csv")
    assert sorted(zip(paired["model"], paired["round"])) == [(m, r) for m in ("Custom CNN", "MobileNetV2")
                                                               for r in ("seed-1", "seed-2")]
    assert (paired.loc[paired["model"] == "MobileNetV2", ["only A right", "only B right"]] == 0).all().all()


@pytest.mark.slow
def test_a_two_value_sweep_runs_the_audit_once_and_writes_its_comparison(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    # no earlier run to reuse (its link, its versions) and no earlier store: the sweep's own only
    (reports / "tiny").unlink()
    shutil.rmtree(reports / ".runs" / "tiny")
    (reports / "mlruns.db").unlink()
    params_file = write_params(tmp_path / "tiny.yaml", values)
    code = run.main([str(params_file), "--set", "evaluation.seeds=[1]", "--set", "minority.methods=[class_weight]",
                     "--sweep", "cnn.dropout=0.3,0.5"])
    assert code == 0
    names = ["tiny-cnn.dropout_0.3", "tiny-cnn.dropout_0.5"]
    steps = [json.loads((reports / name / "steps.json").read_text()) for name in names]
    assert [s["01_data_audit.ipynb"]["reused"] for s in steps] == [False, True]
    assert [s["rounds/seed-1/03_mobilenetv2.ipynb"]["reused"] for s in steps] == [False, True]
    assert [s["rounds/seed-1/02_cnn.ipynb"]["reused"] for s in steps] == [False, False]
    store = _store(reports)
    assert sorted(c.info.run_name for c in _children(store)) == ["seed-1/cnn/class_weight"] * 2 + [
        "seed-1/mobilenetv2/class_weight"], "each training logged once"
    page = reports / "comparisons" / "tiny-sweep"
    assert pd.read_csv(page / "params.csv")["param"].tolist() == ["cnn.dropout"]
    assert (page / "comparison.html").is_file() and (page / "swept.png").stat().st_size > 5_000


# ---- the MLflow UI in a browser


@pytest.mark.slow
@pytest.mark.skipif(bool(app_browser.missing_browser()),
                    reason=app_browser.missing_browser() or "browser present")
def test_the_mlflow_ui_shows_the_tiny_run_with_its_test_macro_f1(tiny_study, tmp_path):
    _, run_dir, _, _ = tiny_study
    [parent] = _parents(_store(run_dir.parent), "tiny")
    port = app_browser.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
               default_uri(run_dir.parent), "--host", "127.0.0.1", "--port", str(port)]
    with open(tmp_path / "ui.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"NO_PROXY": "*"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 180
        while True:
            try:
                if opener.open(f"{url}/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "ui.log").read_text()
                assert time.monotonic() < deadline, "the MLflow UI did not answer"
                time.sleep(0.5)
        with app_browser.chromium_page() as page:
            page.goto(f"{url}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}")
            page.get_by_text("cnn.test_macro_f1", exact=True).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "mlflow.png"), full_page=True)
        value = parent.data.metrics["cnn.test_macro_f1"]
        assert "tiny" in body and "cnn.test_macro_f1" in body
        assert any(f"{value:.{d}f}".rstrip("0").rstrip(".") in body for d in (2, 3, 4, 6)), body[:3000]
    finally:
        server.terminate()
        server.wait(timeout=30)
