"""The two models' training recipes, side by side.

Each recipe builds its model and fits it on the round's training split, once per
minority-class method the round trains (`lib.training.experiment.train_each_method`); the method
decides the loss weights (`class_weight`) and the order of each epoch's images (the
training stream). Everything around the fits (data, validation, choice, test, files) is
`lib.training.experiment`'s and the same for both.

- The custom CNN: one phase, trained from scratch (``cnn.training``).
- MobileNetV2: phase 1 trains a new head on the frozen ImageNet base (``mobilenet_v2.head``),
  phase 2 unfreezes the base's last layers (``mobilenet_v2.fine_tune_layers``, BatchNorm kept
  in inference mode) and fine-tunes them with the head (``mobilenet_v2.fine_tune``); both
  phases read the frozen layers' cached activations unless ``activation_cache`` is off
  (`lib.training.activation_cache`).
"""

from __future__ import annotations

import json
from dataclasses import replace

from lib.core.minority import MinorityMethod
from lib.training.activation_cache import ReusedInputs, phase_inputs
from lib.training.experiment import Experiment, TrainedModel, train_each_method, validate
from lib.training.models import build_cnn, build_mobilenet_v2, parameter_counts, unfreeze_top
from lib.training.train import combine_phases, fit_phase


def cnn_by_method(experiment: Experiment) -> dict[str, TrainedModel]:
    """The study's CNN, trained from scratch once per minority-class method this round trains."""
    params = experiment.params

    def train(method: MinorityMethod) -> TrainedModel:
        model = build_cnn(experiment.n_classes, params.data.image_size, params.cnn)
        history = fit_phase(model, experiment.training_stream(method), experiment.val_ds, params.cnn.training,
                            name="training", class_weight=experiment.class_weight(method),
                            verbose=params.training.verbose)
        return validate(experiment, method.name, model, history, parameter_counts(model))

    return train_each_method(experiment, train)


def mobilenet_v2_by_method(experiment: Experiment) -> dict[str, TrainedModel]:
    """MobileNetV2, both phases, once per minority-class method this round trains, each with what it trained on
    (``inputs``: `lib.training.activation_cache.phase_inputs`, or `ReusedInputs` when every training was reused).

    The frozen layers' activations are cached once and shared by every method's model.
    """
    params, inputs = experiment.params, None
    mobilenet = params.mobilenet_v2

    def train(method: MinorityMethod) -> TrainedModel:
        nonlocal inputs
        model, base = build_mobilenet_v2(experiment.n_classes, params.data.image_size, mobilenet)
        head_parameters = parameter_counts(model)
        if inputs is None:  # the first method's model: the frozen layers' activations are computed here
            inputs = phase_inputs(experiment.round_inputs(), mobilenet, model, base)
        else:
            inputs = inputs.bind(model, base)
        fit_arguments = {"class_weight": experiment.class_weight(method), "verbose": params.training.verbose}
        head = inputs.head_phase(method)
        head_history = fit_phase(head.model, head.train, head.val, mobilenet.head, name="head", **fit_arguments)
        unfrozen = unfreeze_top(base, mobilenet.fine_tune_layers)
        tuned = inputs.fine_tune_phase(method)
        tune_history = fit_phase(tuned.model, tuned.train, tuned.val, mobilenet.fine_tune, name="fine-tune",
                                 **fit_arguments)
        parameters = {
            "total": head_parameters["total"],
            "trainable_phase1": head_parameters["trainable"],
            "trainable_phase2": parameter_counts(model)["trainable"],
            "unfrozen_layers": len(unfrozen),
        }
        if experiment.step_key is not None:  # what a resumed run reports when it reuses this training
            files = experiment.model_paths.training(method.name)
            files.root.mkdir(parents=True, exist_ok=True)
            files.inputs.write_text(json.dumps(inputs.summary()))
        return validate(experiment, method.name, model, combine_phases(head_history, tune_history), parameters)

    trained = train_each_method(experiment, train)
    if inputs is None:  # every training was reused: report the inputs the first one recorded
        first = experiment.model_paths.training(next(iter(trained)))
        inputs = ReusedInputs(json.loads(first.inputs.read_text()))
    return {name: replace(model, inputs=inputs) for name, model in trained.items()}
