"""One execution of a step, and the one contract of every result a step gives: computed, or read back.

Each result a step's notebook shows has two plain functions, named alike in every module:
``compute_<result>(context, *inputs)`` computes it and writes its files into the run folder, and
``read_<result>(context)`` gives back what the compute returned, from those files, computing (and training)
nothing. ``context`` carries the params and the run folder (``params``, ``paths``): the step's `StepRun`
itself (the audit, the comparison), or what a model step builds from it (`lib.training.experiment.prepare`).

`StepRun.result` picks one of the two: a notebook opened by hand on unchanged inputs shows the run's saved
results (``reuses``, `lib.pipeline.interactive`), else it computes. An expensive input (the models' training,
the audit's image features) is passed as the function that computes it, so that reading never runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lib.core.config import Params
from lib.core.paths import RunPaths

Result = TypeVar("Result")


@dataclass
class StepRun:
    """Where one step reads and writes: the validated params (loaded once), the run folder, the evaluation
    round (None: the first, or a run-wide step), the runner's key of the step's inputs (None: none recorded),
    and ``reuses``: it shows ``paths``' results and writes nothing."""

    params: Params
    paths: RunPaths
    round_name: str | None = None
    key: str | None = None
    reuses: bool = False

    def result(self, compute: Callable[..., Result], read: Callable[[object], Result], context,
               *inputs) -> Result:
        """``read(context)`` when this step shows its saved results, else ``compute(context, *inputs)``."""
        return read(context) if self.reuses else compute(context, *inputs)
