"""What both model notebooks do before and after training, in one place.

`prepare` reads the split the audit wrote, decodes it, and builds the tf.data pipelines
and class weights; `evaluate_and_save` scores the trained model on the test split and
writes the model's artefacts (model, history, predictions, metrics, params), which are all
that later steps read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import keras
import pandas as pd

from lib import evaluate
from lib.config import Params, load_params
from lib.paths import ModelPaths, RunPaths, run_paths
from lib.pipeline import StudyData, build_augmentation, load_study_data, make_dataset
from lib.models import set_precision
from lib.provenance import set_seed
from lib.sources import SPLITS
from lib.split import read_split, split_table
from lib.train import class_weight_by_index, training_summary


@dataclass
class Experiment:
    params: Params
    paths: RunPaths
    model_name: str
    data: StudyData
    train_ds: object
    val_ds: object
    class_weight: dict[int, float] | None

    @property
    def model_paths(self) -> ModelPaths:
        return self.paths.model(self.model_name)

    @property
    def n_classes(self) -> int:
        return len(self.data.class_names)

    def class_weight_table(self) -> pd.Series:
        """The loss weight of each class (1.0 everywhere when class weighting is off)."""
        weights = self.class_weight or {}
        return pd.Series(
            [weights.get(i, 1.0) for i in range(self.n_classes)],
            index=pd.Index(self.data.class_names, name="class"),
            name="loss weight",
        )


def prepare(params_file: str, model_name: str, run_dir: str | None = None) -> Experiment:
    """Seed everything, read and decode the split, and build the training and validation streams."""
    params = load_params(params_file)
    set_seed(params.seed, deterministic_tensorflow=params.training.deterministic)
    set_precision(params.training.precision)
    paths = run_paths(params, run_dir)
    data = load_study_data(read_split(paths.split_manifest), params.data.image_size, cache_dir=paths.interim_dir)
    n_classes, batch = len(data.class_names), params.training.batch_size
    augmenter = build_augmentation(params.augmentation, params.seed)
    experiment = Experiment(
        params=params,
        paths=paths,
        model_name=model_name,
        data=data,
        train_ds=make_dataset(data.train, n_classes, batch, augmenter, shuffle_seed=params.seed),
        val_ds=make_dataset(data.val, n_classes, batch),
        class_weight=class_weight_by_index(data.train.labels, data.class_names, params.training.class_weight),
    )
    experiment.model_paths.root.mkdir(parents=True, exist_ok=True)
    return experiment


def split_sizes(experiment: Experiment) -> pd.DataFrame:
    """Images per class in each split, as the model sees them."""
    data = experiment.data
    return split_table(pd.concat([data.train.rows, data.val.rows, data.test.rows]))[list(SPLITS)]


def evaluate_and_save(
    experiment: Experiment,
    model: keras.Model,
    history: pd.DataFrame,
    parameters: dict[str, int],
    training_inputs: dict | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score the model on the test split and write every artefact; returns (metrics, predictions).

    ``training_inputs`` says what the model trained on (e.g. `lib.transfer`'s cache summary).
    """
    test, names = experiment.data.test, experiment.data.class_names
    probabilities, seconds_per_image = evaluate.predict(model, test.images, experiment.params.training.batch_size)
    predictions = evaluate.predictions_table(test.rows, test.labels, probabilities, names)
    files = experiment.model_paths

    model.save(files.model)
    history.to_csv(files.history, index=False)
    predictions.to_csv(files.predictions, index=False)
    metrics = {
        "model": experiment.model_name,
        "class_names": names,
        "test_images": len(test),
        **evaluate.classification_metrics(test.labels, probabilities, names),
        "parameters": parameters,
        "model_file_bytes": files.model.stat().st_size,
        **training_summary(history),
        "inference_seconds_per_image": seconds_per_image,
        "precision": keras.config.dtype_policy().name,
        "training_inputs": training_inputs or {"activation_cache": False},
    }
    files.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    files.params.write_text(json.dumps(experiment.params.to_dict(), indent=2) + "\n")
    return metrics, predictions


def load_trained_model(files: ModelPaths) -> keras.Model:
    """A saved model, loaded in Keras' safe mode: nothing in the file can run code."""
    return keras.models.load_model(files.model, safe_mode=True)
