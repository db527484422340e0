"""The export of a finished run's models: Keras, ONNX and the JSON beside them, and ONNX = Keras."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.core.study import MODELS
from lib.deploy import export
from lib.deploy import finished_run as deploy
from lib.training.models import load_trained_model

pytestmark = pytest.mark.slow  # every test here exports or serves a trained model


@pytest.fixture(scope="module")
def exported(finished_run):
    """Both models exported once; (run folder, {model: model.json})."""
    return finished_run, {name: export.export_model(finished_run, name) for name in MODELS}


def _test_pixels(run_model):
    table = pd.read_csv(run_model.paths.predictions)
    return table, np.stack([deploy.read_image(p, run_model.input_size, 10**8) for p in table["path"]])


@pytest.mark.parametrize("name", MODELS)
def test_onnx_probabilities_match_keras_on_the_test_images(exported, name):
    run, _ = exported
    run_model = deploy.RunModel.open(run, name)
    _, pixels = _test_pixels(run_model)
    from_keras = deploy.KerasClassifier(run_model, float32=True).probabilities(pixels)
    onnx = deploy.OnnxClassifier(export.export_dir(run, name) / "model.onnx", run_model.postprocessing)
    from_onnx = onnx.probabilities(pixels)
    difference = float(np.abs(from_onnx - from_keras).max())
    print(f"{name}: max |p_onnx - p_keras| = {difference:.2e} on {len(pixels)} test images")
    assert from_onnx.shape == (len(pixels), 3)
    assert difference <= 1e-4
    assert np.ptp(from_keras, axis=0).max() > 1e-3  # the images give different answers: the comparison means something


def test_the_json_records_what_a_user_needs(exported):
    run, described = exported
    for name, description in described.items():
        folder = export.export_dir(run, name)
        written = json.loads((folder / "model.json").read_text())
        metrics = deploy.RunModel.open(run, name).metrics
        assert written == description
        assert written["class_names"] == ["alpha", "beta", "gamma"]
        assert (written["input"]["height"], written["input"]["width"]) == (32, 32)
        assert {k: written["postprocessing"][k] for k in ("method", "tau", "priors")} == metrics["postprocessing"]
        assert written["test_metrics"]["per_class"] == metrics["per_class"]
        assert written["test_metrics"]["macro_f1"] == metrics["macro_f1"]
        assert written["files"]["onnx"]["bytes"] == (folder / "model.onnx").stat().st_size > 0
        assert written["check"]["images"] == 22 and written["check"]["max_abs_difference"] <= export.TOLERANCE
        # the saved model without its optimizer: the same answers, exactly, from a smaller file
        run_model = deploy.RunModel.open(run, name)
        exported_keras = load_trained_model(folder / "model.keras")
        _, pixels = _test_pixels(run_model)
        np.testing.assert_array_equal(exported_keras.predict(pixels, verbose=0),
                                      run_model.keras_model.predict(pixels, verbose=0))
        assert exported_keras.dtype_policy.name == run_model.keras_model.dtype_policy.name
        assert written["files"]["keras"]["bytes"] < run_model.paths.model.stat().st_size
    scaling = {name: d["preprocessing"]["inside_the_model"][0] for name, d in described.items()}
    assert scaling["cnn"]["scale"] == pytest.approx(1 / 255) and scaling["cnn"]["offset"] == 0
    assert scaling["mobilenetv2"]["scale"] == pytest.approx(1 / 127.5) and scaling["mobilenetv2"]["offset"] == -1
    assert described["cnn"]["trained_precision"] == "mixed_bfloat16"
    # the float32 ONNX model against what the run tested in bfloat16: close, not equal, and said so
    versus = described["cnn"]["check"]["versus_the_run"]
    tested = pd.read_csv(deploy.RunModel.open(run, "cnn").paths.predictions)
    assert 0 < versus["max_abs_difference"] < 0.1
    assert versus["labels_agreeing"] <= len(tested) and 0 <= versus["onnx_test_metrics"]["macro_f1"] <= 1
    assert "ONNX labels agreeing with the run's" in export.summary_line(described["cnn"])
    assert described["cnn"]["postprocessing"]["formula"].startswith("softmax(log(p) - tau * log(priors))")


def test_logit_adjustment_is_applied_by_both_runtimes(exported):
    run, described = exported
    run_model = deploy.RunModel.open(run, "cnn")
    _, pixels = _test_pixels(run_model)
    onnx = deploy.OnnxClassifier(export.export_dir(run, "cnn") / "model.onnx",
                                 deploy.Postprocessing(**{k: described["cnn"]["postprocessing"][k]
                                                          for k in ("method", "tau", "priors")}))
    raw, adjusted = onnx.raw_probabilities(pixels), onnx.probabilities(pixels)
    keras_classifier = deploy.KerasClassifier(run_model)
    assert np.abs(adjusted - raw).max() > 1e-3  # tau = 1, unequal priors: the adjustment changes the numbers
    np.testing.assert_allclose(adjusted, run_model.postprocessing.apply(raw), atol=0)
    np.testing.assert_allclose(keras_classifier.probabilities(pixels),
                               run_model.postprocessing.apply(keras_classifier.raw_probabilities(pixels)), atol=0)


def test_a_run_without_params_json_finds_its_first_round_and_input_size(finished_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    (old / "params.json").unlink()
    (old / "rounds" / "seed-9").mkdir()  # a later round: no methods.csv
    assert deploy.first_round(old).name == "seed-7"
    assert deploy.RunModel.open(old, "cnn").input_size == (32, 32)


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    assert export.main(["--run", str(tmp_path)]) == 1
    assert f"{tmp_path} is not a finished run" in capsys.readouterr().err
    with pytest.raises(deploy.RunError, match="unknown model 'resnet'"):
        deploy.RunModel.open(tmp_path, "resnet")
