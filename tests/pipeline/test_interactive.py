"""A notebook opened by hand (`lib.pipeline.interactive`): it never writes into the published run, shows that
run's results when its inputs are unchanged, and computes what changed into a scratch run."""

import importlib
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import copy_of_the_study, load_script, tree_digest, write_params

from lib import run
from lib.core.config import ParamsError, load_params
from lib.core.overrides import changed_fields, dotted_overrides, nested_overrides, override_words
from lib.core.paths import NOTEBOOKS_DIR, run_paths
from lib.core.step import StepRun
from lib.core.tracking_store import Store, default_uri
from lib.pipeline import interactive, job

# ---------------------------------------------------------------------------------------------
# Overrides by dotted name
# ---------------------------------------------------------------------------------------------


def test_a_dotlist_and_a_mapping_give_the_same_nested_overrides():
    from_cli = nested_overrides(["mobilenet_v2.dropout=0.4", "evaluation.seeds=[1, 2]", "training.verbose=0",
                                 "mobilenet_v2.weights=null"])
    from_notebook = nested_overrides({"mobilenet_v2.dropout": 0.4, "evaluation.seeds": [1, 2],
                                      "training.verbose": 0, "mobilenet_v2.weights": None})
    assert from_cli == from_notebook == {"mobilenet_v2": {"dropout": 0.4, "weights": None},
                                         "evaluation": {"seeds": [1, 2]}, "training": {"verbose": 0}}
    assert dotted_overrides(["cnn.training.epochs=3"]) == {"cnn.training.epochs": 3}
    assert override_words({"mobilenet_v2.dropout": 0.4, "run_name": "x"}) == ['mobilenet_v2.dropout=0.4',
                                                                             'run_name="x"']


@pytest.mark.parametrize("bad, message", [
    (["mobilenet_v2.dropout"], "expected NAME=VALUE"),
    (["=3"], "expected NAME=VALUE"),
    (["cnn..dropout=0.1"], "expected a dotted name"),
    (["seeds=[1, 2"], "not valid YAML"),
])
def test_malformed_overrides_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        nested_overrides(bad)


def test_overrides_are_validated_with_the_params_file_by_the_same_schema(tmp_path):
    params_file = write_params(tmp_path / "p.yaml", {"run_name": "x", "cnn": {"dropout": 0.2}})
    params = load_params(params_file, ["mobilenet_v2.dropout=0.4", "cnn.training.epochs=3"])
    assert params.mobilenet_v2.dropout == 0.4 and params.cnn.training.epochs == 3 and params.cnn.dropout == 0.2
    with pytest.raises(ParamsError, match=r"with overrides mobilenet_v2\.dropot=0\.4.*\n  - mobilenet_v2\.dropot: "
                                          r"unknown key"):
        load_params(params_file, ["mobilenet_v2.dropot=0.4"])
    with pytest.raises(ParamsError, match=r"  - mobilenet_v2\.dropout: Input should be less than 1 \(got 7\)"):
        load_params(params_file, {"mobilenet_v2.dropout": 7})
    with pytest.raises(ParamsError, match="expected NAME=VALUE"):
        load_params(params_file, ["dropout"])


def test_changed_fields_names_each_dotted_field_that_differs():
    before = {"cnn": {"dropout": 0.5, "training": {"epochs": 25}}, "seed": 1}
    after = {"cnn": {"dropout": 0.4, "training": {"epochs": 25}}, "seed": 1, "extra": {"a": 1}}
    assert changed_fields(before, after) == ["cnn.dropout", "extra.a"]


def test_run_all_set_reaches_every_notebook_and_is_recorded(tiny_params_file, monkeypatch):
    """`./run_all.sh --set` (the runner's stand-in notebooks here): the params with the override key every
    step, each notebook receives the override, and the run records it."""
    from lib.report import render as report_render

    received = []

    def stand_in(planned, params_file, run_paths, key=None, backend=None, overrides=None, environment=None):
        received.append(overrides)
        planned.executed_copy(run_paths).parent.mkdir(parents=True, exist_ok=True)
        planned.executed_copy(run_paths).write_text("{}")

    monkeypatch.setattr(job, "execute_step", stand_in)
    monkeypatch.setattr(report_render, "render", lambda notebook, html, pdf, title: html.write_text("<html/>") or 1)
    assert run.main([str(tiny_params_file), "--set", "mobilenet_v2.dropout=0.4"]) == 0
    assert received and all(overrides == {"mobilenet_v2.dropout": 0.4} for overrides in received)
    final = load_params(tiny_params_file)
    folder = final.reports_dir / final.run_name
    assert json.loads((folder / "params.json").read_text())["mobilenet_v2"]["dropout"] == 0.4
    assert json.loads((folder / "overrides.json").read_text()) == ["mobilenet_v2.dropout=0.4"]
    assert run.main([str(tiny_params_file), "--set", "mobilenet_v2.dropout=7"]) == 2


# ---------------------------------------------------------------------------------------------
# One contract for every step's results: compute_<result> / read_<result>, picked by one call
# ---------------------------------------------------------------------------------------------

RESULT_MODULES = ("lib.data.audit", "lib.training.experiment", "lib.training.probe", "lib.analysis.compare",
                  "lib.analysis.explain")
STEP_RESULTS = {"duplicate_pairs", "audit", "choice", "evaluation", "probe", "comparison", "explanations"}
RESULT_CALL = re.compile(r"notebook\.result\(\s*([\w.]+),\s*([\w.]+),")


def step_functions(prefix: str) -> dict[str, object]:
    """Every function named ``<prefix><result>`` defined (not imported) in `RESULT_MODULES`, by result."""
    found = {}
    for name in RESULT_MODULES:
        module = importlib.import_module(name)
        for attribute, function in vars(module).items():
            if attribute.startswith(prefix) and inspect.isfunction(function) and function.__module__ == name:
                assert attribute[len(prefix):] not in found, f"{attribute} is defined twice"
                found[attribute[len(prefix):]] = function
    return found


def test_every_result_has_one_compute_and_one_read_that_takes_the_context_alone():
    computes, reads = step_functions("compute_"), step_functions("read_")
    assert set(computes) == set(reads) == STEP_RESULTS
    for result in STEP_RESULTS:
        read, compute = inspect.signature(reads[result]), inspect.signature(computes[result])
        assert len(read.parameters) == 1, f"read_{result} takes the context alone"
        assert list(compute.parameters)[0] == list(read.parameters)[0], f"compute_{result} takes the context first"
        assert computes[result].__module__ == reads[result].__module__


def test_the_notebooks_branch_on_nothing_and_call_each_result_through_its_pair():
    called = []
    for notebook in ("01_data_audit.ipynb", "02_cnn.ipynb", "03_mobilenetv2.ipynb", "04_comparison.ipynb",
                     "05_report.ipynb"):
        cells = json.loads((NOTEBOOKS_DIR / notebook).read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        assert "reuses" not in code, f"{notebook} branches on notebook.reuses"
        for compute, read in RESULT_CALL.findall(code):
            compute, read = compute.rpartition(".")[2], read.rpartition(".")[2]
            assert compute.startswith("compute_") and read == "read_" + compute[len("compute_"):], (notebook, compute)
            called.append(compute[len("compute_"):])
    assert sorted(called) == sorted([*STEP_RESULTS, "choice", "evaluation"]), "02 and 03 both choose and evaluate"


def test_a_step_run_reads_when_it_reuses_and_computes_otherwise(tmp_path):
    params = load_params(write_params(tmp_path / "p.yaml", {"reports_dir": str(tmp_path)}))
    calls = []

    def compute_twice(context, value):
        calls.append(("compute", context, value))
        return value * 2

    def read_twice(context):
        calls.append(("read", context))
        return "saved"

    computing, showing = StepRun(params, run_paths(params)), StepRun(params, run_paths(params), reuses=True)
    assert computing.result(compute_twice, read_twice, "context", 21) == 42
    assert showing.result(compute_twice, read_twice, "context", 21) == "saved"
    assert calls == [("compute", "context", 21), ("read", "context")]


# ---------------------------------------------------------------------------------------------
# Notebooks run by hand on a finished study
# ---------------------------------------------------------------------------------------------


def run_by_hand(notebook: str, params_file: Path, out: Path, **parameters) -> str:
    """Everything a source notebook prints, executed as a person would (`benchmarks/by_hand.py`)."""
    return load_script("benchmarks/by_hand.py").run_by_hand(notebook, params_file, out, **parameters)[1]


TRAINING_LINE = "--- "  # `lib.training.experiment.train_each_method` prints one before each training
FEATURES_BAR = "Image features"  # `lib.training.features.streamed_features`' progress bar


def everything_shown(executed: Path) -> str:
    """The text of every output of an executed notebook, progress bars included (their plain-text form)."""
    outputs = [o for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)


@pytest.mark.slow
def test_notebooks_by_hand_never_write_the_published_run_and_train_only_what_changed(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    params_file = write_params(tmp_path / "tiny.yaml", values)
    published = reports / "tiny"
    before = tree_digest(published)
    written = {file: file.stat().st_mtime_ns for file in published.rglob("*") if file.is_file()}
    out = tmp_path / "executed"
    out.mkdir()

    # Unchanged inputs: every notebook shows the published results, trains nothing, writes nothing anywhere.
    for notebook, rounds in (("01_data_audit.ipynb", [None]), ("02_cnn.ipynb", ["seed-1", "seed-2"]),
                             ("03_mobilenetv2.ipynb", ["seed-1", "seed-2"]), ("04_comparison.ipynb", [None]),
                             ("05_report.ipynb", [None])):
        for round_name in rounds:
            printed = run_by_hand(notebook, params_file, out, **({"round_name": round_name} if round_name else {}))
            assert f"showing the results of {published}" in printed and "reused" in printed, printed[:500]
            assert TRAINING_LINE not in printed
    assert tree_digest(published) == before
    # Reading never writes: no file of the run (models, histories, tables) is even written again with the same bytes.
    assert {file: file.stat().st_mtime_ns for file in published.rglob("*") if file.is_file()} == written
    assert not (reports / interactive.SCRATCH_DIR).exists()
    # The audit shown again reads the pairs it found: MobileNetV2's features are not computed again.
    assert FEATURES_BAR in everything_shown(published / "notebooks" / "01_data_audit.ipynb")
    assert FEATURES_BAR not in everything_shown(next(out.glob("by-hand-*-01_data_audit.ipynb")))

    # One model parameter changed: the MobileNetV2 notebook trains into the scratch run; the audit and the
    # CNN are reused there; the published run is untouched.
    change = {"mobilenet_v2.dropout": 0.3}
    printed = run_by_hand("03_mobilenetv2.ipynb", params_file, out, overrides=change)
    scratch = interactive.scratch_paths(load_params(params_file, change))
    assert "these params differ from the published run's: mobilenet_v2.dropout" in printed
    assert f"writing into the scratch run {scratch.root}" in printed and TRAINING_LINE in printed
    assert scratch.root.parent == reports / interactive.SCRATCH_DIR
    recorded = json.loads(scratch.steps.read_text())["rounds/seed-1/03_mobilenetv2.ipynb"]
    assert recorded["by_hand"] is True
    # ... and logged to MLflow: the scratch run's parent, a child per method it trained, under the step's key
    store = Store(default_uri(reports), "product-image-study")
    [parent] = [r for r in store.search("tags.`study.kind` = 'scratch'") if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["study.run_folder"] == str(scratch.root.resolve())
    children = store.search(f"tags.`study.step_key` = '{recorded['key']}'")
    trained = pd.read_csv(scratch.round("seed-1").model("mobilenetv2").methods)["method"].unique()
    assert sorted(c.info.run_name for c in children) == sorted(f"seed-1/mobilenetv2/{m}" for m in trained)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for notebook in ("01_data_audit.ipynb", "02_cnn.ipynb", "03_mobilenetv2.ipynb"):
        printed = run_by_hand(notebook, params_file, out, overrides=change)
        assert f"showing the results of {scratch.root}" in printed and TRAINING_LINE not in printed
    assert tree_digest(published) == before

    # A later ./run_all.sh of the published params reuses every step and publishes nothing from the scratch run.
    record = run.run_study(params_file)
    assert [label for label, entry in record.items() if not entry["reused"]] == ["05_report.ipynb",
                                                                                 run.REPORT_STEP]
    after = tree_digest(published)
    unchanged = {name for name in before
                 if not name.startswith(("notebooks/05", "report.", "steps.json", "tracking.json"))
                 and not name.endswith(".lock")}  # a cache's lock file is its folder's own, never copied
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}
    assert not any(interactive.SCRATCH_DIR in name for name in after)
    assert yaml.safe_load(params_file.read_text())["reports_dir"] == str(reports)
