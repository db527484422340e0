"""The whole study, every notebook executed through papermill as ./run_all.sh runs them: outputs, reuse, resume,
the dataset never written. (On JAX, across processes: tests/training/test_distribution.py.)"""

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from helpers import (
    TINY_CLASSES,
    copy_of_the_study,
    make_class_folders,
    tree_digest,
    write_params,
)

from lib import run
from lib.core.config import load_params
from lib.core.minority import Postprocessing
from lib.core.paths import NOTEBOOKS_DIR, ModelPaths, RunPaths
from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME
from lib.data.pixels import decode_images
from lib.data.split import MANIFEST_COLUMNS
from lib.pipeline import job
from lib.training.models import load_trained_model


def test_source_notebooks_have_a_parameters_cell_and_no_outputs():
    for step in run.STEPS:
        notebook = nbformat.read(NOTEBOOKS_DIR / step.notebook, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "params_file" in tagged[0].source and "run_dir" in tagged[0].source
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")




def _published(reports: Path) -> dict[str, str]:
    """The digest of what a reader sees under reports/: everything but a failed run's staging folder, the locks
    (which name their last holder) and the MLflow store, which logs every run, the failed ones too (as FAILED)."""
    return {k: v for k, v in tree_digest(reports).items()
            if not k.startswith((".staging-", ".locks", "mlruns.db", "mlartifacts"))}


@pytest.mark.slow
def test_every_notebook_runs_without_errors(tiny_study):
    params_file, root, record, _ = tiny_study
    assert list(record) == ["01_data_audit.ipynb",
                            "rounds/seed-1/02_cnn.ipynb", "rounds/seed-1/03_mobilenetv2.ipynb",
                            "rounds/seed-2/02_cnn.ipynb", "rounds/seed-2/03_mobilenetv2.ipynb",
                            "04_comparison.ipynb", "05_report.ipynb", run.REPORT_STEP]
    assert not any(entry["reused"] for entry in record.values())
    for planned in run.planned_steps(load_params(params_file)):
        assert record[planned.label]["peak_rss_gib"] > 0.05, planned.label  # a kernel with TensorFlow loaded
        if planned.step.model is not None:  # its epochs, as its history.csv has them (one epoch per phase here)
            assert record[planned.label]["epoch_seconds"] == planned.epoch_seconds(RunPaths(root)), planned.label
            assert all(phase["epochs"] == 1 and phase["slowest"] > 0
                       for phase in record[planned.label]["epoch_seconds"].values()), planned.label
        executed = nbformat.read(planned.executed_copy(RunPaths(root)), as_version=4)
        outputs = [o for c in executed.cells for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], planned.label
        figures = [o for o in outputs if "image/png" in o.get("data", {})
                   or "data:image/png" in "".join(o.get("data", {}).get("text/html", ""))]
        assert figures, f"{planned.label} shows no figure"


@pytest.mark.slow
def test_audit_writes_a_split_manifest_per_round(tiny_study):
    _, root, _, _ = tiny_study
    manifests = [pd.read_csv(root / "rounds" / name / "split.csv") for name in ("seed-1", "seed-2")]
    for manifest in manifests:
        assert list(manifest.columns) == MANIFEST_COLUMNS
        assert manifest["label"].value_counts().to_dict() == TINY_CLASSES
        assert set(manifest.groupby("label")["split"].nunique()) == {3}, "every class in every split"
    assert not manifests[0].set_index("relpath")["split"].equals(manifests[1].set_index("relpath")["split"])
    images = pd.read_csv(root / "data" / "images.csv")
    for manifest in manifests:  # no near-duplicate group in two splits
        grouped = manifest.merge(images[["relpath", "group"]], on="relpath")
        assert grouped.groupby("group")["split"].nunique().max() == 1
    summary = json.loads((root / "data" / "audit.json").read_text())
    assert [row["round"] for row in summary["leaks_by_round"]] == ["seed-1", "seed-2"]
    assert all(row["test images with a training near-duplicate (used)"] == 0 for row in summary["leaks_by_round"])
    assert summary["classes"] == TINY_CLASSES
    assert summary["imbalance_ratio"] == 1.5
    assert "params" not in summary and "params_fingerprint" not in summary  # run-wide: the report's, not the audit's
    run_params = json.loads((root / "params.json").read_text())  # where the run records them, read by no step
    assert run_params["data"]["image_size"] == [32, 32] and "reports_dir" not in run_params


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["cnn", "mobilenetv2"])
def test_model_artefacts_and_their_columns(tiny_study, model_name):
    _, root, _, _ = tiny_study
    folder = root / "rounds" / "seed-1" / model_name
    manifest = pd.read_csv(root / "rounds" / "seed-1" / "split.csv")
    test_rows = manifest[manifest["split"] == "test"]

    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == [
        "path", "relpath", "true_label", "predicted_label", *[f"p_{name}" for name in sorted(TINY_CLASSES)]
    ]
    assert sorted(predictions["relpath"]) == sorted(test_rows["relpath"])
    np.testing.assert_allclose(predictions.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)

    history = pd.read_csv(folder / "history.csv")
    assert {"epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "best"} <= set(history.columns)
    assert len(history) == (1 if model_name == "cnn" else 2)

    metrics = json.loads((folder / "metrics.json").read_text())
    accuracy = (predictions["true_label"] == predictions["predicted_label"]).mean()
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["test_images"] == len(test_rows)
    assert {"loss", "balanced_accuracy", "macro_f1", "weighted_f1", "per_class", "parameters",
            "training_seconds", "inference_seconds_per_image", "model_file_bytes"} <= set(metrics)
    if model_name == "mobilenetv2":
        assert metrics["parameters"]["unfrozen_layers"] == 13  # the last 20 layers less 7 BatchNorm
        assert metrics["parameters"]["trainable_phase2"] > metrics["parameters"]["trainable_phase1"]
        # the linear probe trained beside it (lib.training.probe): the same test images, in the same format
        probe_predictions = pd.read_csv(ModelPaths(folder).probe_predictions)
        assert list(probe_predictions.columns) == list(predictions.columns)
        assert sorted(probe_predictions["relpath"]) == sorted(test_rows["relpath"])
        probe_metrics = json.loads(ModelPaths(folder).probe_metrics.read_text())
        assert probe_metrics["minority_method"] == metrics["minority_method"] and probe_metrics["round"] == "seed-1"
        assert probe_metrics["accuracy"] == pytest.approx(
            (probe_predictions["true_label"] == probe_predictions["predicted_label"]).mean())
    assert metrics["round"] == "seed-1" and metrics["seed"] == 1

    # the first round compares the minority-class methods on validation; the second trains the chosen one
    methods = pd.read_csv(folder / "methods.csv")
    assert sorted(methods["method"].unique()) == ["class_weight", "logit_adjustment", "oversample"]
    assert sorted(methods["split"].unique()) == ["test", "val"]
    chosen = methods.loc[methods["chosen"], "method"].unique().tolist()
    assert chosen == [metrics["minority_method"]]
    val = methods[methods["split"] == "val"].set_index("method")["macro_f1"]
    assert val[chosen[0]] == val.max()
    second = root / "rounds" / "seed-2" / model_name
    assert not (second / "methods.csv").exists()
    assert json.loads((second / "metrics.json").read_text())["minority_method"] == chosen[0]

    model = load_trained_model(ModelPaths(folder).model)
    images = decode_images(predictions["path"], (32, 32)).astype("float32")
    post = Postprocessing(**metrics["postprocessing"])
    np.testing.assert_allclose(
        post.apply(model.predict(images, verbose=0)), predictions.filter(like="p_").to_numpy(), atol=1e-5
    )


@pytest.mark.slow
def test_same_params_and_seed_give_identical_predictions(tiny_study, tmp_path):
    """The first round's model notebooks (every minority-class method) run again on a copy of the run."""
    params_file, root, _, _ = tiny_study
    again = RunPaths(tmp_path / "again")
    shutil.copytree(root, again.root)
    for name in ("cnn", "mobilenetv2"):  # nothing of the first run's models is left to compare with itself
        shutil.rmtree(again.round("seed-1").model(name).root)
    for planned in run.planned_steps(load_params(params_file)):
        if planned.round_name == "seed-1":
            job.execute_step(planned, params_file, again)
    for name in ("cnn", "mobilenetv2"):
        for table in ("predictions.csv", "methods.csv",
                      *(("probe_predictions.csv", "probe_validation.csv") if name == "mobilenetv2" else ())):
            before = pd.read_csv(root / "rounds" / "seed-1" / name / table)
            pd.testing.assert_frame_equal(before, pd.read_csv(again.round("seed-1").model(name).root / table),
                                          check_exact=True)


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell(tmp_path, tiny_params):
    folder = make_class_folders(tmp_path / "small", {"plenty": 20, "tiny": 2})
    params_file = write_params(tmp_path / "small.yaml", tiny_params | {"data": {"source": "folder", "directory": str(folder)}})
    with pytest.raises(run.StepFailed) as raised:
        run.run_study(params_file)
    message = str(raised.value)
    assert message.startswith("01_data_audit.ipynb failed in cell ")
    assert "SplitError" in message and "'tiny' has 2" in message
    assert (tmp_path / "reports" / ".staging-tiny").is_dir(), "the failed run's executed copy is kept for a look"
    assert not list((tmp_path / "reports").rglob("split.csv")), "the audit stopped before writing any split"


def test_round_folders_of_other_evaluation_params_are_removed_before_publishing(tmp_path):
    params = load_params(write_params(tmp_path / "p.yaml", {"reports_dir": str(tmp_path / "r"),
                                                           "evaluation": {"seeds": [7, 8]}}))
    staged = RunPaths(tmp_path / "staging")
    for name in ("seed-7", "seed-8", "seed-9", "fold-1-of-5"):
        (staged.round(name).root / "cnn").mkdir(parents=True)
        (staged.round(name).root / "split.csv").write_text("relpath,label,split\n")
    assert run.remove_unplanned_rounds(staged, run.planned_steps(params)) == ["fold-1-of-5", "seed-9"]
    assert sorted(p.name for p in staged.rounds_dir.iterdir()) == ["seed-7", "seed-8"]
    assert (staged.round("seed-7").root / "split.csv").is_file()
    assert run.remove_unplanned_rounds(RunPaths(tmp_path / "empty"), run.planned_steps(params)) == []


def test_bad_params_stop_the_run_before_any_notebook(tmp_path, capsys):
    params_file = write_params(tmp_path / "bad.yaml", {"reports_dir": str(tmp_path / "r"), "split": {"train": 2}})
    assert run.main([str(params_file)]) == 2
    error = capsys.readouterr().err
    assert "split.train: Input should be less than 1" in error
    assert not (tmp_path / "r").exists()


def test_assets_folder_seeds_the_keras_cache(tmp_path, monkeypatch):
    from lib.data import assets

    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    folder = tmp_path / "assets" / "keras" / "models"
    folder.mkdir(parents=True)
    weights = folder / assets.MOBILENET_V2_WEIGHTS_NAME
    weights.write_bytes(b"weights")
    sums = tmp_path / "assets" / "SHA256SUMS"
    sums.write_text(f"{assets.sha256_of(weights)}  keras/models/{weights.name}\n")

    seeded = assets.seed_keras_cache(tmp_path / "assets")
    assert seeded == {weights.name: home / "models" / weights.name}
    assert (home / "models" / weights.name).read_bytes() == b"weights"

    (home / "models" / weights.name).unlink()
    weights.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="does not match its SHA256SUMS entry"):
        assets.seed_keras_cache(tmp_path / "assets")
    assert not (home / "models" / weights.name).exists()


@pytest.mark.slow
def test_a_failure_mid_run_leaves_the_previous_report_byte_identical(tiny_study, tmp_path, monkeypatch):
    reports, values = copy_of_the_study(tiny_study, tmp_path)  # a copy: the failed run is logged to its MLflow store
    params_file = write_params(tmp_path / "tiny.yaml", values)
    before = _published(reports)
    # A damaged weights file in the Keras cache the kernels see: the audit fails.
    damaged = tmp_path / "keras_home" / "models" / MOBILENET_V2_WEIGHTS_NAME
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not an HDF5 file")
    monkeypatch.setenv("KERAS_HOME", str(damaged.parent.parent))
    with pytest.raises(run.StepFailed) as raised:
        run.run_study(params_file, force=True)
    assert str(raised.value).startswith("01_data_audit.ipynb failed in cell")  # its near-duplicate features
    assert "could not be downloaded" in str(raised.value)  # the damaged copy is fetched again: offline, it fails
    assert _published(reports) == before


@pytest.mark.slow
def test_unchanged_steps_are_reused(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    record = run.run_study(write_params(tmp_path / "same.yaml", values))
    assert [entry["reused"] for entry in record.values()][:-1] == [True] * 6 + [False]  # report: always
    assert all(entry["peak_rss_gib"] > 0.05 for entry in record.values() if entry["reused"])  # kept from before
    html = (reports / "tiny" / "report.html").read_text()
    assert html.count("<td>reused</td>") == 6 and "peak memory (GiB)" in html


@pytest.mark.slow
def test_a_mobilenet_v2_change_reruns_mobilenet_v2_the_comparison_and_the_report_only(tiny_study, tmp_path,
                                                                                     monkeypatch):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    values["mobilenet_v2"]["dropout"] = 0.3
    real_execute, executed = job.execute_step, []
    monkeypatch.setattr(job, "execute_step", lambda planned, *args: executed.append(planned.label) or real_execute(planned, *args))
    record = run.run_study(write_params(tmp_path / "dropout.yaml", values))
    assert executed == ["rounds/seed-1/03_mobilenetv2.ipynb", "rounds/seed-2/03_mobilenetv2.ipynb",
                        "04_comparison.ipynb", "05_report.ipynb"]
    assert [label for label, entry in record.items() if entry["reused"]] == [
        "01_data_audit.ipynb", "rounds/seed-1/02_cnn.ipynb", "rounds/seed-2/02_cnn.ipynb"]


@pytest.mark.slow
def test_model_folders_hold_what_their_step_declares_and_a_step_or_a_user_reads(tiny_study):
    params_file, root, _, _ = tiny_study
    paths = RunPaths(root)
    plan = run.planned_steps(load_params(params_file))
    declared = {path for planned in plan for path in planned.reads(paths)}
    for planned in (planned for planned in plan if planned.step.per_round):
        files = paths.round(planned.round_name).model(planned.step.model)
        written = set(files.root.rglob("*"))
        assert written == set(planned.writes(paths)), f"{planned.label} writes other files than it declares"
        # model.keras: the trained model itself, for its users (and the artefacts test above)
        assert written - declared <= {files.model}, f"{files.root} holds files nothing reads"


@pytest.mark.slow
def test_an_interrupted_run_changes_nothing_and_the_next_one_resumes_rerunning_only_changed_steps(
    tiny_study, tmp_path, monkeypatch, capsys
):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    values["cnn"]["training"]["epochs"] = 2
    more_cnn_epochs = write_params(tmp_path / "more_cnn_epochs.yaml", values)
    before = _published(reports)
    real_execute = job.execute_step
    executed = []

    def interrupted_in_the_second_round(planned, *args):
        if planned.label == "rounds/seed-2/02_cnn.ipynb":
            raise KeyboardInterrupt
        executed.append(planned.label)
        return real_execute(planned, *args)

    monkeypatch.setattr(job, "execute_step", interrupted_in_the_second_round)
    assert run.main([str(more_cnn_epochs)]) == 130
    error = capsys.readouterr().err
    assert "interrupted in rounds/seed-2/02_cnn.ipynb" in error
    assert "The previous report and artefacts are unchanged." in error
    assert _published(reports) == before
    assert executed == ["rounds/seed-1/02_cnn.ipynb"]  # the audit and MobileNetV2 do not depend on CNN epochs

    # the next run resumes: what the interrupted run finished is reused, the rest runs
    executed.clear()
    monkeypatch.setattr(job, "execute_step", lambda planned, *args: executed.append(planned.label) or real_execute(planned, *args))
    assert run.main([str(more_cnn_epochs)]) == 0
    assert "resuming the unfinished run" in capsys.readouterr().out
    assert executed == ["rounds/seed-2/02_cnn.ipynb", "04_comparison.ipynb", "05_report.ipynb"]
    assert not (reports / ".staging-tiny").exists()
    for round_name in ("seed-1", "seed-2"):
        cnn = reports / "tiny" / "rounds" / round_name / "cnn"
        assert len(pd.read_csv(cnn / "history.csv")) == 2, "trained for the new epoch budget (patience is 5)"


@pytest.mark.slow
def test_the_dataset_folder_is_never_written(tiny_study):
    *_, (folder, before) = tiny_study
    assert tree_digest(folder) == before


def test_a_rerun_reuses_every_step_but_the_report_and_force_reruns_them_all(tiny_params_file, monkeypatch):
    """The runner's reuse decisions alone: every notebook execution and the rendering are stand-ins here."""
    from lib.report import render as report_render

    executed = []

    def stand_in(planned, params_file, run_paths, key=None, backend=None, overrides=None, environment=None):
        executed.append(planned.label)
        planned.executed_copy(run_paths).parent.mkdir(parents=True, exist_ok=True)
        planned.executed_copy(run_paths).write_text("{}")

    def render(notebook, html, pdf, title):
        html.write_text("<html></html>")
        pdf.write_bytes(b"%PDF-1.7")
        return 1

    monkeypatch.setattr(job, "execute_step", stand_in)
    monkeypatch.setattr(report_render, "render", render)
    labels = [planned.label for planned in run.planned_steps(load_params(tiny_params_file))]
    run.run_study(tiny_params_file)
    assert executed == labels
    executed.clear()
    run.run_study(tiny_params_file)
    assert executed == ["05_report.ipynb"], "the report always runs: it describes the run itself"
    executed.clear()
    run.run_study(tiny_params_file, force=True)
    assert executed == labels


def test_without_weasyprint_the_html_report_is_published_and_no_pdf_of_an_earlier_run_stays(
        tiny_params_file, monkeypatch, capsys):
    """A machine without WeasyPrint (or without the Pango it loads) still gets its HTML report; the PDF
    is left out, with a note, rather than failing the run or keeping an earlier run's PDF beside it."""
    import sys

    from lib.report import render as report

    def stand_in(planned, params_file, run_paths, key=None, backend=None, overrides=None, environment=None):
        planned.executed_copy(run_paths).parent.mkdir(parents=True, exist_ok=True)
        planned.executed_copy(run_paths).write_text("{}")

    monkeypatch.setattr(job, "execute_step", stand_in)
    monkeypatch.setattr(report, "render_html", lambda notebook, title: f"<html>{title}</html>")
    monkeypatch.setattr(report, "render_pdf", lambda html, pdf: pdf.write_bytes(b"%PDF-1.7") or 3)
    monkeypatch.setitem(sys.modules, "weasyprint", sys.modules.get("weasyprint") or object())
    run.run_study(tiny_params_file)
    params = load_params(tiny_params_file)
    published = params.reports_dir / "report.pdf"
    assert published.read_bytes() == b"%PDF-1.7"

    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint now raises ImportError
    run.run_study(tiny_params_file)
    final = RunPaths(params.reports_dir / params.run_name)
    assert final.report_html.is_file() and (params.reports_dir / "report.html").is_file()
    assert not final.report_pdf.exists() and not published.exists(), "an earlier run's PDF must not stay"
    assert json.loads(final.report_info.read_text())["pdf_pages"] is None
    assert "no PDF this time, the HTML report is complete" in capsys.readouterr().out
