"""The study's models: one entry each, which every stage that names a model reads.

The steps (`lib.pipeline.steps`: one model step per entry, run in every evaluation round), the training
plumbing (`lib.training.experiment`: the model's params section), the comparison and the report (its
title, in every table, figure and sentence), the trained models' users (`lib.deploy`: which models a
finished run holds) and the benchmarks all read `MODELS`; no other module writes a model's name.

Adding a model is one entry here, its params section (`lib.core.config.Params`), its recipe (a function
of `lib.training.recipes` that trains it once per minority-class method) and its notebook.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyModel:
    """One model of the study.

    ``name``: its folder in each round (`lib.core.paths.RoundPaths.model`), its ``export/`` folder, and its
    name on the command line (``predict.sh --model``). ``title``: the name a reader sees everywhere.
    ``params_section``: its section of the params. ``notebook``: its step's notebook, run once per round.
    ``recipe``: the dotted name of its training recipe, imported when it is used (``lib.core`` stands below
    ``lib.training``). ``probe``: the title of the linear probe its step trains beside it on its frozen
    features (`lib.training.probe`), None for a model without one. ``phases``: each training phase as its
    history names it, with the sub-section of its params that holds its epochs.
    """

    name: str
    title: str
    params_section: str
    notebook: str
    recipe: str
    phases: tuple[tuple[str, str], ...]
    probe: str | None = None

    def phase_epochs(self, params) -> tuple[tuple[str, int], ...]:
        """Each training phase with its epoch budget in ``params``."""
        return tuple((phase, getattr(self.params(params), section).epochs) for phase, section in self.phases)

    def params(self, params):
        """Its section of a validated `lib.core.config.Params`."""
        return getattr(params, self.params_section)

    def recipe_function(self) -> Callable:
        """The recipe itself: ``recipe(experiment)`` trains the model once per minority-class method."""
        module, _, function = self.recipe.rpartition(".")
        return getattr(importlib.import_module(module), function)


# In the order the study compares them: the first two are the pair the paired tests compare.
MODELS: dict[str, StudyModel] = {model.name: model for model in (
    StudyModel("cnn", "Custom CNN", "cnn", "02_cnn.ipynb", "lib.training.recipes.cnn_by_method",
               phases=(("training", "training"),)),
    StudyModel("mobilenetv2", "MobileNetV2", "mobilenet_v2", "03_mobilenetv2.ipynb",
               "lib.training.recipes.mobilenet_v2_by_method", phases=(("head", "head"), ("fine-tune", "fine_tune")),
               probe="Linear probe (frozen MobileNetV2)"),
)}

# The sanity floor of transfer learning: the model whose step trains a linear probe beside it (into its own
# folder: `lib.core.paths.ModelPaths.probe_predictions`, ...); the comparison shows the probe as a row of its
# own, outside the paired tests of the two models.
PROBE_MODEL = next(model for model in MODELS.values() if model.probe is not None)
PROBE_NAME = PROBE_MODEL.probe
# The model ``predict.sh`` and ``export`` use when none is named: the transfer-learning one.
DEFAULT_MODEL = PROBE_MODEL.name


def study_model(name: str) -> StudyModel:
    """The entry of ``name``; an unknown name is an error that lists the study's models."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: the study's models are {', '.join(MODELS)}")
    return MODELS[name]
