"""A small finished run written in the study's layout without running the study (seconds, not minutes).

Three colour classes of generated photos; a CNN trained for a few epochs in mixed bfloat16 (as
``precision: auto`` trains on a bfloat16 CPU) with logit adjustment as its post-processing, and
a MobileNetV2 (ImageNet base, from Keras' cache as the other tests use it) whose head trained briefly,
with class weights: what the export,
`predict` and the app read from a real run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from helpers import make_class_folders

CLASSES = {"alpha": 8, "beta": 8, "gamma": 6}
SIZE = (32, 32)
ROUND = "seed-7"


def make_finished_run(root: Path, with_params: bool = True) -> Path:
    """``root/reports/tiny`` with both models of round seed-7, their metrics, predictions and methods tables."""
    import keras

    from lib.core.config import parse_params
    from lib.core.minority import Postprocessing, class_priors
    from lib.core.paths import RunPaths
    from lib.data.images import load_rgb
    from lib.training.models import build_cnn, build_mobilenet_v2

    folder = make_class_folders(root / "images", CLASSES, seed=3)
    paths = sorted(folder.rglob("*.jpg"))
    names = list(CLASSES)
    labels = np.array([names.index(p.parent.name) for p in paths])
    pixels = np.stack([np.asarray(load_rgb(str(p), SIZE)) for p in paths]).astype("float32")
    run = RunPaths(root / "reports" / "tiny")
    if with_params:
        params = parse_params({"data": {"image_size": list(SIZE)}, "evaluation": {"seeds": [7]}})
        run.root.mkdir(parents=True)
        run.params_used.write_text(json.dumps(params.study_values()))

    keras.utils.set_random_seed(7)
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        layers = SimpleNamespace(conv_filters=[4, 8], kernel_size=3, dense_units=16, dropout=0.0)
        cnn = build_cnn(len(names), SIZE, layers)
        cnn.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        cnn.fit(pixels, labels, epochs=8, batch_size=8, verbose=0)
        keras.config.set_dtype_policy("float32")
        mobilenet, _ = build_mobilenet_v2(len(names), SIZE, SimpleNamespace(weights="imagenet", dense_units=8,
                                                                             dropout=0.0))
        mobilenet.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        mobilenet.fit(pixels, labels, epochs=3, batch_size=8, verbose=0)  # the head only: the base is frozen
    finally:
        keras.config.set_dtype_policy("float32")

    logit_adjustment = Postprocessing("logit_adjustment", 1.0, class_priors(labels, len(names)).tolist())
    trained = [("cnn", cnn, logit_adjustment), ("mobilenetv2", mobilenet, Postprocessing("class_weight"))]
    for name, model, post in trained:
        write_model(run.round(ROUND).model(name), model, post, paths, folder, labels, pixels, names)
    return run.root


def write_model(files, model, post, paths, folder, labels, pixels, names) -> None:
    """What a model step writes: model.keras, predictions.csv, metrics.json, methods.csv (all images as 'test')."""
    import pandas as pd

    from lib.training import evaluate

    files.root.mkdir(parents=True, exist_ok=True)
    model.save(files.model)
    probabilities = post.apply(model.predict(pixels, verbose=0))
    rows = pd.DataFrame({"path": [str(p) for p in paths], "relpath": [p.relative_to(folder).as_posix() for p in paths]})
    evaluate.predictions_table(rows, labels, probabilities, names).to_csv(files.predictions, index=False)
    metrics = {"model": files.root.name, "round": ROUND, "class_names": names, "test_images": len(paths),
               **evaluate.classification_metrics(labels, probabilities, names),
               "minority_method": post.method, "postprocessing": post.to_dict(),
               "precision": model.dtype_policy.name}
    files.metrics.write_text(json.dumps(metrics, indent=2))
    pd.DataFrame({"method": [post.method], "chosen": [True]}).to_csv(files.methods, index=False)
