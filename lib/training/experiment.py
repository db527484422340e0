"""The plumbing both training recipes (`lib.training.recipes`) share: before, around and after training.

`prepare` reads one evaluation round's split, decodes it, and builds the validation stream;
`train_each_method` trains one model per minority-class method the round trains (reusing
what an interrupted run finished); `validate` and `compute_choice` compare the methods on the
validation split; `compute_evaluation` scores the chosen model on the test split and writes
the model's artefacts (model, history, predictions, metrics, params), which are all that
later steps read. `read_choice` and `read_evaluation` give back what those two returned, from their
files (`lib.core.step`: a notebook opened by hand on a finished step trains nothing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd

from lib.core import minority, progress
from lib.core.backends import check_active_backend, visible_gpus
from lib.core.config import Params
from lib.core.devices import (Devices, data_parallel, missing_gpu_warning, on_this_process,
                              visible_devices)
from lib.core.distribution import join_from_environment
from lib.core.paths import ModelPaths, RoundPaths, RunPaths
from lib.core.provenance import set_seed
from lib.core.step import StepRun
from lib.core.study import StudyModel, study_model
from lib.data.augmentation import build_augmentation
from lib.data.inputs import data_workers, evaluation_stream, training_stream
from lib.data.pixels import StudyData, load_study_data
from lib.data.rounds import Round, Rounds, evaluation_rounds
from lib.data.sources import SPLITS
from lib.data.split import read_split, split_table
from lib.training import evaluate
from lib.training.activation_cache import RoundInputs
from lib.training.models import load_trained_model, set_precision
from lib.training.train import training_summary

@dataclass
class Experiment:
    """One model in one evaluation round: the run's params, the rounds, this round (whose seed seeds
    everything random here), the decoded data and the validation stream."""

    params: Params
    paths: RunPaths
    rounds: Rounds
    round: Round
    model_name: str
    data: StudyData
    val_ds: object
    step_key: str | None = None  # set by ./run_all.sh: finished trainings with this key are reused
    devices: Devices = field(default_factory=visible_devices)  # what Keras' backend trains on
    shard: tuple[int, int] = (0, 1)  # (this process, processes): across processes, each feeds its share of a batch

    @property
    def round_paths(self) -> RoundPaths:
        return self.paths.round(self.round.name)

    @property
    def model(self) -> StudyModel:
        """This model's entry in the study (`lib.core.study.MODELS`)."""
        return study_model(self.model_name)

    @property
    def model_paths(self) -> ModelPaths:
        return self.round_paths.model(self.model_name)

    @property
    def n_classes(self) -> int:
        return len(self.data.class_names)

    @property
    def is_first_round(self) -> bool:
        return self.round == self.rounds.first

    def describe(self) -> str:
        """The run, the round and its seed, classes, split sizes and input size; the training protocol."""
        data, size = self.data, self.params.data.image_size
        section = self.model.params_section
        return (f"run '{self.params.run_name}', round {self.round.name} (seed {self.round.seed}): "
                f"{self.n_classes} classes, {len(data.train)} / {len(data.val)} / {len(data.test)} "
                f"train / val / test images at {size[0]} x {size[1]} px\n"
                f"training protocol: {self.model.params(self.params).protocol} ({section}.protocol)")

    def artefacts(self) -> pd.Series:
        """The files this model's notebook wrote, with their sizes in MB."""
        files = sorted(p for p in self.model_paths.root.iterdir() if p.is_file())
        return pd.Series({p.name: round(p.stat().st_size / 1e6, 2) for p in files}, name="MB")

    def augmenter(self):
        return build_augmentation(self.params.augmentation, self.round.seed)

    @property
    def data_workers(self) -> int:
        """The worker threads that prepare batches (``training.data_workers``, 'auto' as the devices ask)."""
        return data_workers(self.params.training.data_workers, self.devices.platform != "cpu")

    def training_stream(self, method: minority.MinorityMethod):
        """The augmented training batches, each epoch ordered as ``method`` asks (oversampled or shuffled)."""
        return training_stream(self.data.train, self.n_classes, self.params.training.batch_size, method,
                               self.round.seed, self.augmenter(), self.data_workers, self.shard)

    def round_inputs(self) -> RoundInputs:
        """This round's data as MobileNetV2's phases train on it (`lib.training.activation_cache`)."""
        return RoundInputs(self.data.train, self.data.val, self.n_classes, self.params.data.image_size,
                           self.params.training.batch_size, self.round.seed, self.augmenter(), self.data_workers,
                           self.training_stream, self.val_ds, self.shard)

    def class_weight(self, method: minority.MinorityMethod) -> dict[int, float] | None:
        """Keras' ``class_weight`` under ``method``: 'balanced' weights if it weights the loss, else None."""
        return method.class_weight(self.data.train.labels, self.n_classes)

    def class_weight_table(self) -> pd.Series:
        """The loss weight of each class under the class-weight method."""
        weights = self.class_weight(minority.METHODS["class_weight"])
        return pd.Series(list(weights.values()), index=pd.Index(self.data.class_names, name="class"),
                         name="loss weight")

    def methods_to_train(self) -> list[str]:
        """Every minority-class method in the first round; afterwards the one the first round chose."""
        methods = list(self.params.minority.methods)
        if self.is_first_round or len(methods) == 1:
            return methods
        first = self.paths.round(self.rounds.first.name).model(self.model_name)
        if not first.methods.is_file():
            raise FileNotFoundError(f"{first.methods} is missing: run the first round of {self.model_name} first")
        table = pd.read_csv(first.methods)
        return [str(table.loc[table["chosen"], "method"].iloc[0])]


def prepare(run: StepRun, model_name: str) -> Experiment:
    """Seed everything with the round's seed, read and decode its split, and build the validation stream.

    ``run``: the step's `lib.core.step.StepRun` (a notebook's `lib.pipeline.interactive.NotebookRun`), whose
    params are used as they are, never loaded again. Its ``round_name`` None is the first round; its ``key``, the
    runner's key of this step's inputs (`lib.pipeline.keys.step_key`), is the one each method's training is
    saved under, so that a run interrupted part-way through a step reuses the methods it had finished (None:
    always train). ``run.reuses``: the run folder is only read (a notebook opened by hand showing a finished
    step): no folder is made and the pixel cache is not written.
    """
    study_model(model_name)  # a model the study does not have stops here, naming those it has
    params, writes = run.params, not run.reuses
    check_active_backend(params.training.backend)
    rounds = evaluation_rounds(params.evaluation)
    round_ = rounds.named(run.round_name)
    # A kernel of a run across processes joins the others before anything computes (`lib.run.run_study`)
    where = join_from_environment() if writes else None
    devices = visible_devices()  # across processes: every process's devices
    if writes and (missing := missing_gpu_warning(devices, visible_gpus())):
        progress.warn(missing)
    set_seed(round_.seed, deterministic=params.training.deterministic)
    set_precision(params.training.precision, devices)
    paths = run.paths
    split = paths.round(round_.name).split_manifest
    data = load_study_data(read_split(split), params.data.image_size, cache_dir=paths.interim_dir, write_cache=writes)
    experiment = Experiment(
        params=params,
        paths=paths,
        rounds=rounds,
        round=round_,
        model_name=model_name,
        data=data,
        val_ds=evaluation_stream(data.val, len(data.class_names), params.training.batch_size,
                                 data_workers(params.training.data_workers, devices.platform != "cpu")),
        step_key=run.key,
        devices=devices,
        shard=(0, 1) if where is None else (where.index, where.processes),
    )
    if writes:
        experiment.model_paths.root.mkdir(parents=True, exist_ok=True)
    return experiment


def split_sizes(experiment: Experiment) -> pd.DataFrame:
    """Images per class in each split, as the model sees them."""
    data = experiment.data
    return split_table(pd.concat([data.train.rows, data.val.rows, data.test.rows]))[list(SPLITS)]


@dataclass
class TrainedModel:
    """A model trained with one minority-class method, with its validation-fitted post-processing."""

    method: str
    model: keras.Model
    history: pd.DataFrame
    parameters: dict[str, int]
    postprocessing: minority.Postprocessing
    val_probabilities: np.ndarray | None  # None: read back from a finished step, whose choice is made
    # What it trained on while the step computes (MobileNetV2: `lib.training.activation_cache`'s inputs, whose
    # summary the metrics record and whose frozen features the probe reuses); None: the CNN, or read back.
    inputs: object | None = None


def validate(experiment: Experiment, method: str, model: keras.Model, history: pd.DataFrame,
             parameters: dict[str, int]) -> TrainedModel:
    """Predict the validation split and fit the method's post-processing there (logit adjustment's tau).

    Trained across processes, the model kept (predicted with, saved, evaluated) is this process's copy of it
    (`lib.core.devices.on_this_process`)."""
    data = experiment.data
    with on_this_process(model) as model:
        probabilities, _ = evaluate.predict(model, data.val.images, experiment.params.training.batch_size)
    post = minority.fit_postprocessing(method, probabilities, data.val.labels, data.train.labels,
                                       experiment.n_classes, experiment.params.minority)
    return TrainedModel(method, model, history, parameters, post, probabilities)


def save_training(experiment: Experiment, trained: TrainedModel) -> None:
    """Keep a finished training under the step's key (nothing without a key), for an interrupted run to reuse."""
    if experiment.step_key is None:
        return
    files = experiment.model_paths.training(trained.method)
    files.root.mkdir(parents=True, exist_ok=True)
    files.key.unlink(missing_ok=True)
    trained.model.save(files.model)
    trained.history.to_csv(files.history, index=False)
    files.parameters.write_text(json.dumps(trained.parameters))
    files.key.write_text(experiment.step_key)  # last: its presence means the rest is complete


def saved_training(experiment: Experiment, method: str) -> TrainedModel | None:
    """A training of ``method`` finished earlier with the same step key (same inputs), validated again; or None."""
    files = experiment.model_paths.training(method)
    if experiment.step_key is None or not files.key.is_file() or files.key.read_text() != experiment.step_key:
        return None
    print(f"--- {minority.METHODS[method].title}: reused the training an interrupted run finished", flush=True)
    model = load_trained_model(files.model)
    history = pd.read_csv(files.history)
    return validate(experiment, method, model, history, json.loads(files.parameters.read_text()))


def train_each_method(experiment: Experiment,
                      train: Callable[[minority.MinorityMethod], TrainedModel]) -> dict[str, TrainedModel]:
    """``train(method)`` for every minority-class method this round trains, in order, by name; a training
    that an interrupted run finished under the same step key is reused instead.

    Every method starts from the same initial weights: the round's seed is set again before each.
    With several devices, each training runs over all of them (`lib.core.devices.data_parallel`).
    """
    trained = {}
    names = experiment.methods_to_train()
    for number, name in enumerate(names, start=1):
        method = minority.METHODS[name]
        saved = saved_training(experiment, name)
        progress.report("training", model=experiment.model_name, method=name.replace("_", " "), number=number,
                        of=len(names), reused=saved is not None)
        if saved is not None:
            trained[name] = saved
            continue
        print(f"--- {method.title} ({number} of {len(names)})", flush=True)
        set_seed(experiment.round.seed, deterministic=experiment.params.training.deterministic)
        with data_parallel(experiment.devices, experiment.params.training.batch_size):
            trained[name] = train(method)
        save_training(experiment, trained[name])
    return trained


def methods_table(experiment: Experiment, trained: dict[str, TrainedModel]) -> pd.DataFrame:
    """Each method's validation scores (and, in the first round, its test scores, for the record only)."""
    data, names = experiment.data, experiment.data.class_names
    rare = minority.minority_class(data.train.labels, names)
    rows = []
    for method, result in trained.items():
        rows.append(minority.method_row(method, result.postprocessing, "val", result.val_probabilities,
                                        data.val.labels, names, rare))
        if experiment.is_first_round:
            test_probabilities, _ = evaluate.predict(result.model, data.test.images, experiment.params.training.batch_size)
            rows.append(minority.method_row(method, result.postprocessing, "test", test_probabilities,
                                            data.test.labels, names, rare))
    return pd.DataFrame(rows).assign(minority_class=rare)


def compute_choice(experiment: Experiment,
                   train: Callable[[Experiment], dict[str, TrainedModel]]) -> tuple[TrainedModel, pd.DataFrame]:
    """Train the round's methods (``train``: the model's recipe, `lib.training.recipes`), and return the one whose
    model scores best on validation, with the comparison table (`methods_table`, written to ``methods.csv`` in
    the first round).

    The table also holds each method's test scores, for the record: they play no part in the choice.
    """
    trained = train(experiment)
    progress.report("stage", text="choosing the method on the validation split")
    table = methods_table(experiment, trained)
    chosen = minority.best_method(table, experiment.params.minority.selection_metric, list(trained))
    table["chosen"] = table["method"] == chosen
    if experiment.is_first_round:
        table.to_csv(experiment.model_paths.methods, index=False)
    return trained[chosen], table


def read_choice(experiment: Experiment) -> tuple[TrainedModel, pd.DataFrame]:
    """What `compute_choice` returned when the step ran, read from the files the step wrote: the kept model with
    its history, parameters and post-processing, and the methods table (the first round's ``methods.csv``; a
    later round, which trains one method, gets that method's row again from its validation predictions)."""
    files = experiment.model_paths
    metrics = json.loads(files.metrics.read_text())
    method, model = metrics["minority_method"], load_trained_model(files.model)
    history = pd.read_csv(files.history)
    if experiment.is_first_round:
        post = minority.Postprocessing(**metrics["postprocessing"])
        return TrainedModel(method, model, history, metrics["parameters"], post, None), pd.read_csv(files.methods)
    chosen = validate(experiment, method, model, history, metrics["parameters"])
    return chosen, methods_table(experiment, {method: chosen}).assign(chosen=True)


def read_evaluation(experiment: Experiment) -> tuple[dict, pd.DataFrame]:
    """What `compute_evaluation` returned when the step ran: (metrics, test predictions), read from its files."""
    files = experiment.model_paths
    return json.loads(files.metrics.read_text()), pd.read_csv(files.predictions)


def compute_evaluation(experiment: Experiment, trained: TrainedModel) -> tuple[dict, pd.DataFrame]:
    """Score the chosen model on the test split and write every artefact; returns (metrics, predictions).

    The test probabilities pass through the method's post-processing (fitted on validation). The metrics
    record what the model trained on (``trained.inputs``: e.g. `lib.training.activation_cache`'s cache summary).
    """
    progress.report("stage", text="testing the chosen model, saving it")
    test, names = experiment.data.test, experiment.data.class_names
    probabilities, seconds_per_image = evaluate.predict(trained.model, test.images, experiment.params.training.batch_size)
    probabilities = trained.postprocessing.apply(probabilities)
    predictions = evaluate.predictions_table(test.rows, test.labels, probabilities, names)
    files = experiment.model_paths

    trained.model.save(files.model)
    trained.history.to_csv(files.history, index=False)
    predictions.to_csv(files.predictions, index=False)
    metrics = {
        **evaluate.test_metrics(experiment.model_name, experiment.round, names, test.labels, probabilities,
                                trained.method, trained.postprocessing),
        "parameters": trained.parameters,
        "model_file_bytes": files.model.stat().st_size,
        **training_summary(trained.history),
        "inference_seconds_per_image": seconds_per_image,
        "precision": keras.config.dtype_policy().name,
        "runtime": experiment.devices.to_dict() | {"batch_size": experiment.params.training.batch_size,
                                                   "deterministic": experiment.params.training.deterministic},
        "training_inputs": {"activation_cache": False} if trained.inputs is None else trained.inputs.summary(),
    }
    files.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(files.trainings_dir, ignore_errors=True)  # the step is complete: nothing left to resume
    return metrics, predictions
