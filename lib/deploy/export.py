"""Export a finished run's first-round models for use outside the study:

    python -m lib.deploy.export --run reports/default [--models NAME,...] [--check-images 64]

For each model, ``reports/<run>/export/<model>/`` gets:

- ``model.keras``: the trained model for inference: its layers, dtype policies and weights as the run saved
  them, without the optimizer's state (a third of the CNN's saved file);
- ``model.onnx``: the same network in float32 for onnxruntime (no Keras or TensorFlow needed), converted
  by Keras' own ONNX export (tf2onnx);
- ``model.json``: what a user needs besides the network: class names, input size and layout, how to read
  and scale an image, the post-processing (method, tau, class priors, formula), the test metrics overall
  and per class, each file's size, and the check below.

The check runs the round's test images (``--check-images``: how many; default all), read as the study
read them, through both the Keras model in float32 and the ONNX model, both post-processed by the same
numpy function, and records the largest absolute difference of their probabilities; the export fails
when it exceeds `TOLERANCE`. A run trained in mixed bfloat16 tested its model in that precision, so the
check also records how the float32 ONNX model compares with what the run tested: labels agreeing with
``predictions.csv``, the largest probability difference, and the ONNX model's own test metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.minority import METHODS
from lib.core.paths import PROJECT_ROOT
from lib.core.study import MODELS
from lib.deploy.finished_run import (
    KerasClassifier,
    OnnxClassifier,
    RunError,
    RunModel,
    inference_copy,
    max_image_pixels,
    read_image,
)
from lib.deploy.registry import register_exports
from lib.training.evaluate import classification_metrics

TOLERANCE = 1e-4  # float32 ONNX vs float32 Keras, probabilities after post-processing
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "loss", "test_images")


class ExportError(RuntimeError):
    """The exported model does not reproduce the Keras model's probabilities."""


def export_dir(run_dir: Path, model_name: str) -> Path:
    return Path(run_dir) / "export" / model_name


def export_model(run_dir: Path, model_name: str, check_images: int | None = None) -> dict:
    """Export one model of the run's first round; returns what ``model.json`` holds."""
    run_model = RunModel.open(run_dir, model_name)
    folder = export_dir(run_dir, model_name)
    folder.mkdir(parents=True, exist_ok=True)
    inference_copy(run_model.keras_model).save(folder / "model.keras")
    keras_classifier = KerasClassifier(run_model, float32=True)
    height, width = run_model.input_size
    write_onnx(keras_classifier.model, (height, width), folder / "model.onnx")
    onnx_classifier = OnnxClassifier(folder / "model.onnx", run_model.postprocessing)
    check = compare_runtimes(run_model, keras_classifier, onnx_classifier, check_images)
    description = describe(run_model, keras_classifier.model, folder, check)
    (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    if check["max_abs_difference"] > TOLERANCE:
        raise ExportError(f"{folder / 'model.onnx'}: probabilities differ from Keras' by up to "
                          f"{check['max_abs_difference']:.2e} on {check['images']} test images (tolerance {TOLERANCE})")
    return description


def write_onnx(model, size: tuple[int, int], target: Path) -> None:
    """The float32 Keras model as ONNX, taking a batch of (height, width, 3) float32 pixels 0-255."""
    import keras

    signature = [keras.InputSpec(shape=(None, *size, 3), dtype="float32")]
    model.export(str(target), format="onnx", input_signature=signature, verbose=False)


def test_images(run_model: RunModel, limit: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The round's test images still on disk (rows of ``predictions.csv``, up to ``limit``; None: all) and their
    pixels as the model takes them. Without any (a run whose images moved): no rows and random pixels, so
    that the runtimes are still compared."""
    size, max_pixels = run_model.input_size, max_image_pixels(run_model.run_dir)
    table = pd.read_csv(run_model.paths.predictions) if run_model.paths.predictions.is_file() else pd.DataFrame()
    if not table.empty:
        table = table[table["path"].map(lambda path: Path(path).is_file())].head(limit).reset_index(drop=True)
    if table.empty:
        return table, np.random.default_rng(0).integers(0, 256, size=(8, *size, 3)).astype(np.uint8)
    return table, np.stack([read_image(path, size, max_pixels) for path in table["path"]])


def compare_runtimes(run_model: RunModel, keras_classifier, onnx_classifier, limit: int | None) -> dict:
    """Both runtimes' post-processed probabilities on the same test images: the largest absolute difference;
    and the ONNX model against what the run tested (its labels, its probabilities, its test metrics), which
    differ where the run computed in mixed bfloat16."""
    table, pixels = test_images(run_model, limit)
    from_keras = keras_classifier.probabilities(pixels)
    from_onnx = onnx_classifier.probabilities(pixels)
    check = {
        "images": len(pixels),
        "source": "test images" if len(table) else "random pixels (no test image on disk)",
        "max_abs_difference": float(np.abs(from_keras - from_onnx).max()),
        "same_labels": int((from_keras.argmax(axis=1) == from_onnx.argmax(axis=1)).sum()),
        "tolerance": TOLERANCE,
    }
    if len(table):
        names = run_model.class_names
        tested = table[[f"p_{name}" for name in names]].to_numpy(dtype=float)
        metrics = classification_metrics(table["true_label"].map(names.index).to_numpy(), from_onnx, names)
        check["versus_the_run"] = {
            "labels_agreeing": int((np.asarray(names)[from_onnx.argmax(axis=1)] == table["predicted_label"]).sum()),
            "max_abs_difference": float(np.abs(from_onnx - tested).max()),
            "onnx_test_metrics": {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "macro_f1")},
        }
    return check


def scaling_layers(model) -> list[dict]:
    """The Rescaling layers the model applies to its input, in order, as (scale, offset)."""
    import keras

    return [{"layer": layer.name, "scale": float(layer.scale), "offset": float(layer.offset)}
            for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]


def describe(run_model: RunModel, float32_model, folder: Path, check: dict) -> dict:
    """``model.json``: everything but the network that a user of the exported files needs."""
    metrics, (height, width) = run_model.metrics, run_model.input_size
    post = run_model.postprocessing
    return {
        "model": run_model.name,
        "run": run_model.run_dir.name,
        "round": run_model.paths.root.parent.name,
        "exported_from": {"file": run_model.paths.model.relative_to(run_model.run_dir).as_posix(),
                          "sha256": run_model.model_sha256()},
        "class_names": run_model.class_names,
        "input": {"height": height, "width": width, "channels": 3, "layout": "NHWC (batch, height, width, RGB)",
                  "dtype": "float32", "range": "raw pixels 0-255"},
        "preprocessing": {
            "reading": "upright by EXIF orientation, first frame, RGB (palette/alpha on white, CMYK and 16-bit "
                       "converted), resized bilinearly to the input size: lib.data.images.load_rgb",
            "inside_the_model": scaling_layers(float32_model),
        },
        "postprocessing": {
            **post.to_dict(),
            "formula": ("softmax(log(p) - tau * log(priors)), p clipped to [1e-12, 1] "
                        "(lib.core.minority.Postprocessing.apply)" if METHODS[post.method].adjusts_logits and post.tau
                        else "none: the model's probabilities as they are"),
        },
        "minority_method": metrics.get("minority_method"),
        "trained_precision": metrics.get("precision"),
        "test_metrics": {**{key: metrics[key] for key in METRIC_KEYS if key in metrics},
                         "per_class": metrics["per_class"]},
        "files": {
            "keras": {"file": "model.keras", "bytes": (folder / "model.keras").stat().st_size},
            "onnx": {"file": "model.onnx", "bytes": (folder / "model.onnx").stat().st_size, "dtype": "float32",
                     "runtime": "onnxruntime"},
        },
        "check": check,
    }


def summary_line(described: dict) -> str:
    """One model's export in a line: sizes, the runtime check, and the ONNX model against the run."""
    check, files = described["check"], described["files"]
    line = (f"{described['model']}: keras {files['keras']['bytes'] / 1e6:.1f} MB, "
            f"onnx {files['onnx']['bytes'] / 1e6:.1f} MB; max |p_onnx - p_keras| = {check['max_abs_difference']:.2e} on {check['images']} {check['source']}")
    if "versus_the_run" in check:
        versus = check["versus_the_run"]
        line += (f"; ONNX labels agreeing with the run's: {versus['labels_agreeing']}/{check['images']}, ONNX test "
                 f"macro-F1 {versus['onnx_test_metrics']['macro_f1']:.3f} (the run's: "
                 f"{described['test_metrics']['macro_f1']:.3f})")
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a finished run's first-round models (Keras, ONNX, JSON).")
    parser.add_argument("--run", type=Path, default=PROJECT_ROOT / "reports" / "default",
                        help="the finished run's folder (default: the project's reports/default)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    parser.add_argument("--check-images", type=int, help="test images compared between runtimes (default: all)")
    args = parser.parse_args(argv)
    described = {}
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            described[name] = export_model(args.run, name, args.check_images)
            print(summary_line(described[name]), flush=True)
    except (RunError, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for version in register_exports(args.run, described):
        print(f"registered in MLflow: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
