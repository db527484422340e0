"""A finished run's trained models, ready to classify new photos: what the export, `predict` and the app share.

A finished run (``reports/<run_name>/``) keeps, for each model of its first evaluation round,
the trained model (``model.keras``, raw RGB pixels 0-255 in, its own scaling inside), its test
metrics and its post-processing (``metrics.json``). `RunModel` reads them; `read_image` reads a
photo exactly as the study read its images (and refuses what the audit refuses, with the
audit's reason); `KerasClassifier` and `OnnxClassifier` give post-processed probabilities, both
through the same `lib.core.minority.Postprocessing.apply` (numpy), so logit adjustment is the same
in every runtime.

A model trained in mixed bfloat16 (``precision: auto`` on a bfloat16 CPU) keeps that precision in
Keras, so that it gives the answers its test metrics describe: on the default run, MobileNetV2 in
float32 changed 3 of 261 test labels. The ONNX export runs in float32 (`as_float32`, onnxruntime
has no bfloat16 convolutions); `lib.deploy.export` records how far its answers and test metrics differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lib.core.config import AuditParams, parse_params
from lib.core.minority import Postprocessing
from lib.core.paths import ModelPaths, RoundPaths, RunPaths
from lib.core.study import MODELS
from lib.data.audit import inspect_image
from lib.data.images import load_rgb
from lib.data.rounds import evaluation_rounds
from lib.data.sources import IMAGE_EXTENSIONS, is_hidden

class RunError(ValueError):
    """A folder that is not a finished run, or a model it does not have."""


class UnreadableImage(ValueError):
    """A file that cannot be classified; the message is the audit's reason."""


# ---------------------------------------------------------------------------------------------
# The run and its models
# ---------------------------------------------------------------------------------------------


def first_round(run_dir: Path) -> RoundPaths:
    """The run's first evaluation round: from its ``params.json``, or, in runs written before it
    existed, the round whose model folders hold ``methods.csv`` (only the first round compares methods)."""
    run = RunPaths(Path(run_dir))
    if run.params_used.is_file():
        params = parse_params(json.loads(run.params_used.read_text()), source=str(run.params_used))
        return run.round(evaluation_rounds(params.evaluation).first.name)
    candidates = sorted(run.rounds_dir.glob(f"*/*/{ModelPaths(Path()).methods.name}"))
    if not candidates:
        raise RunError(f"{run_dir} is not a finished run: it has no params.json and no rounds/<round>/<model>/"
                       "methods.csv (run ./run_all.sh first)")
    return RoundPaths(candidates[0].parents[1])


def max_image_pixels(run_dir: Path) -> int:
    """The audit's decompression-bomb limit of the run (its params, or the default)."""
    params_file = RunPaths(Path(run_dir)).params_used
    if params_file.is_file():
        return parse_params(json.loads(params_file.read_text())).audit.max_image_pixels
    return AuditParams().max_image_pixels


def finished_runs(reports_dir: Path) -> list[Path]:
    """The finished runs under ``reports_dir`` (folders with a first-round model), by name; staging folders left out."""
    found = []
    for folder in sorted(Path(reports_dir).iterdir()) if Path(reports_dir).is_dir() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            try:
                if any(first_round(folder).model(name).metrics.is_file() for name in MODELS):
                    found.append(folder)
            except RunError:
                continue
    return found


@dataclass(frozen=True)
class RunModel:
    """One model of a finished run's first round: its files, test metrics and post-processing."""

    run_dir: Path
    name: str  # a model of the study (`lib.core.study.MODELS`)

    @classmethod
    def open(cls, run_dir, name: str) -> RunModel:
        if name not in MODELS:
            raise RunError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
        model = cls(Path(run_dir), name)
        for required in (model.paths.model, model.paths.metrics):
            if not required.is_file():
                raise RunError(f"{required} is missing: {run_dir} has no finished {name} model in its first round")
        return model

    @cached_property
    def paths(self) -> ModelPaths:
        return first_round(self.run_dir).model(self.name)

    @cached_property
    def metrics(self) -> dict:
        return json.loads(self.paths.metrics.read_text())

    def model_sha256(self) -> str:
        """The SHA-256 of the run's model file: what an export was made from."""
        digest = hashlib.sha256()
        with open(self.paths.model, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @property
    def class_names(self) -> list[str]:
        return list(self.metrics["class_names"])

    @property
    def postprocessing(self) -> Postprocessing:
        return Postprocessing(**self.metrics["postprocessing"])

    @cached_property
    def keras_model(self):
        """The saved model, loaded in Keras' safe mode, as it was trained (its dtype policy included)."""
        # Keras and its backend load here, only when a Keras model is used: ONNX prediction never needs them.
        from lib.training.models import load_trained_model

        return load_trained_model(self.paths.model)

    @cached_property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes: the run's ``data.image_size``, else the model's input shape."""
        params_file = RunPaths(self.run_dir).params_used
        if params_file.is_file():
            return tuple(json.loads(params_file.read_text())["data"]["image_size"])
        _, height, width, _ = self.keras_model.inputs[0].shape
        return int(height), int(width)

    def class_metrics(self, label: str) -> dict:
        """The test precision, recall, F1 and support of one class (how far to trust that prediction)."""
        return self.metrics["per_class"][label]


def as_float32(model):
    """A copy of a Keras model that computes in float32 (a mixed-precision model's weights are float32 already)."""
    return inference_copy(model, dtype_policy="float32")


def inference_copy(model, dtype_policy: str | None = None):
    """The model rebuilt from its config with the same weights, without the optimizer and its state (what
    classifying needs); every layer's dtype policy set to ``dtype_policy`` when given. Rebuilt in safe mode:
    nothing is traced or unpickled."""
    import keras

    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # or it is compiled again, and its optimizer's slots are saved with it
    if dtype_policy is not None:
        config = _with_policy(config, dtype_policy)
    copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    return copy


def _with_policy(config, name: str):
    """``config`` with each serialized DTypePolicy called ``name``."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": name}}
        return {key: _with_policy(value, name) for key, value in config.items()}
    if isinstance(config, list):
        return [_with_policy(value, name) for value in config]
    return config


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def read_image(path, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """A photo as the models take it: (height, width, 3) uint8, upright RGB, first frame, resized as in the study.

    Raises `UnreadableImage` with the audit's reason (empty, not an image, truncated, decompression bomb...).
    """
    checked = inspect_image(str(path), max_pixels)
    if checked["error"]:
        # The audit opens the bytes it hashed: Pillow names that buffer (and its address) where a user wants the file.
        raise UnreadableImage(re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", repr(Path(path).name),
                                     checked["error"]))
    return np.asarray(load_rgb(str(path), size), dtype=np.uint8)


def image_files(inputs) -> list[Path]:
    """Files to classify: each file as given (whatever its name), and every image file under each folder
    (by extension, hidden files left out, in a stable order). A path that does not exist is kept, so
    that it is reported as unreadable."""
    files = []
    for given in map(Path, inputs):
        if given.is_dir():
            for dirpath, dirnames, filenames in os.walk(given, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
                files += [Path(dirpath) / name for name in sorted(filenames)
                          if not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
        else:
            files.append(given)
    return files


# ---------------------------------------------------------------------------------------------
# Classifiers: post-processed probabilities, the same way in every runtime
# ---------------------------------------------------------------------------------------------


class KerasClassifier:
    """A run's model in Keras, post-processed as the run chose: in the precision it was trained and tested
    in (the model's own dtype policy), or in float32 (``float32=True``: the arithmetic of the ONNX export)."""

    runtime = "keras"

    def __init__(self, run_model: RunModel, float32: bool = False):
        self.run_model = run_model
        self.model = as_float32(run_model.keras_model) if float32 else run_model.keras_model

    def raw_probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(pixels, dtype="float32"), batch_size=batch_size, verbose=0))

    def probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.run_model.postprocessing.apply(self.raw_probabilities(pixels, batch_size))


class OnnxClassifier:
    """An exported ONNX model in onnxruntime (no Keras, no TensorFlow), post-processed as its JSON says."""

    runtime = "onnx"

    def __init__(self, onnx_file, postprocessing: Postprocessing):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.postprocessing = postprocessing

    def raw_probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        pixels = np.asarray(pixels, dtype="float32")
        batches = [self.session.run(None, {self.input_name: pixels[start : start + batch_size]})[0]
                   for start in range(0, len(pixels), batch_size)]
        return np.concatenate(batches) if batches else np.zeros((0, 0), dtype="float32")

    def probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.postprocessing.apply(self.raw_probabilities(pixels, batch_size))


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image, most probable first (ties: the earlier class)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[: max(1, k)]
    return [(class_names[i], float(probabilities[i])) for i in order]
