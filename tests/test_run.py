"""The notebooks executed end to end through papermill, as ./run_all.sh runs them."""

import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from conftest import make_class_folders, write_params
from lib import run
from lib.experiment import load_trained_model
from lib.paths import NOTEBOOKS_DIR, ModelPaths
from lib.pipeline import decode_images
from lib.split import MANIFEST_COLUMNS


def test_source_notebooks_have_a_parameters_cell_and_no_outputs():
    for step in run.STEPS:
        notebook = nbformat.read(NOTEBOOKS_DIR / step.notebook, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "params_file" in tagged[0].source
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


TINY_TRAINING = {
    "training": {"batch_size": 8},
    "cnn": {"training": {"epochs": 1}},
    "mobilenet_v2": {"head": {"epochs": 1}, "fine_tune": {"epochs": 1}},
}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The whole study, every notebook, run once on a tiny generated dataset (one epoch a phase)."""
    root = tmp_path_factory.mktemp("study")
    folder = make_class_folders(root / "images", {"alpha": 12, "beta": 10, "gamma": 8})
    params = {
        "run_name": "tiny",
        "reports_dir": str(root / "reports"),
        "data": {"source": "folder", "directory": str(folder), "image_size": [32, 32]},
        "audit": {"samples_per_class": 3},
        **TINY_TRAINING,
    }
    params_file = write_params(root / "tiny.yaml", params)
    timings = run.run_study(params_file)
    return params_file, root / "reports" / "tiny", timings


@pytest.mark.slow
def test_every_notebook_runs_without_errors(tiny_study):
    _, root, timings = tiny_study
    assert list(timings) == [step.notebook for step in run.STEPS]
    for step in run.STEPS:
        executed = nbformat.read(root / "notebooks" / step.notebook, as_version=4)
        outputs = [o for c in executed.cells for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], step.notebook
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{step.notebook} shows no figure"


@pytest.mark.slow
def test_audit_writes_the_split_manifest(tiny_study):
    _, root, _ = tiny_study
    manifest = pd.read_csv(root / "data" / "split.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["label"].value_counts().to_dict() == {"alpha": 12, "beta": 10, "gamma": 8}
    assert set(manifest.groupby("label")["split"].nunique()) == {3}, "every class in every split"
    summary = json.loads((root / "data" / "audit.json").read_text())
    assert summary["classes"] == {"alpha": 12, "beta": 10, "gamma": 8}
    assert summary["imbalance_ratio"] == 1.5
    assert summary["params"]["data"]["image_size"] == [32, 32]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["cnn", "mobilenetv2"])
def test_model_artefacts_and_their_columns(tiny_study, model_name):
    _, root, _ = tiny_study
    folder = root / model_name
    manifest = pd.read_csv(root / "data" / "split.csv")
    test_rows = manifest[manifest["split"] == "test"]

    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == [
        "path", "relpath", "true_label", "predicted_label", "p_alpha", "p_beta", "p_gamma"
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
    assert json.loads((folder / "params.json").read_text())["cnn"]["training"]["epochs"] == 1

    model = load_trained_model(ModelPaths(folder))
    images = decode_images(predictions["path"], (32, 32)).astype("float32")
    np.testing.assert_allclose(
        model.predict(images, verbose=0), predictions.filter(like="p_").to_numpy(), atol=1e-5
    )


@pytest.mark.slow
def test_same_params_and_seed_give_identical_predictions(tiny_study):
    params_file, root, _ = tiny_study
    first = {name: pd.read_csv(root / name / "predictions.csv") for name in ("cnn", "mobilenetv2")}
    run.run_study(params_file, steps=run.STEPS[1:])
    for name, before in first.items():
        pd.testing.assert_frame_equal(before, pd.read_csv(root / name / "predictions.csv"), check_exact=True)


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell(tmp_path, tiny_params):
    folder = make_class_folders(tmp_path / "small", {"plenty": 20, "tiny": 2})
    params_file = write_params(tmp_path / "small.yaml", tiny_params | {"data": {"source": "folder", "directory": str(folder)}})
    with pytest.raises(run.StepFailed) as raised:
        run.run_study(params_file)
    message = str(raised.value)
    assert message.startswith("01_data_audit.ipynb failed in cell ")
    assert "SplitError" in message and "'tiny' has 2" in message
    assert not (tmp_path / "reports" / "tiny" / "data" / "split.csv").exists()


def test_bad_params_stop_the_run_before_any_notebook(tmp_path, capsys):
    params_file = write_params(tmp_path / "bad.yaml", {"reports_dir": str(tmp_path / "r"), "split": {"train": 2}})
    assert run.main([str(params_file)]) == 2
    error = capsys.readouterr().err
    assert "split.train: Input should be less than 1" in error
    assert not (tmp_path / "r").exists()


def test_assets_folder_seeds_the_keras_cache(tmp_path, monkeypatch):
    from lib import assets

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
