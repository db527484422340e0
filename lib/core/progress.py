"""What a step's kernel tells the runner while it works: a one-way progress channel.

The runner (`lib.pipeline.progress`) gives each step's kernel a file, named by ``STUDY_PROGRESS_FILE``; the long
loops in ``lib`` (each training's epochs, the audit's images, the activation cache) append one JSON line per event
to it, and the runner shows them as they come. A notebook opened by hand has no such file and writes nothing: there
Keras' per-epoch lines and tqdm's bars show the same progress. In a run across processes only process 0's runner
names a file, so one process tells.

The events (each with ``event`` and ``time``, seconds since the epoch):

    training  a model is trained (``reused``: an interrupted run's training is taken instead): ``model``,
              ``method`` (its title), ``number`` of ``of``
    phase     a ``fit`` begins: ``phase``, ``epochs`` (its budget)
    epoch     an epoch ended: ``phase``, ``epoch``, ``epochs``, ``seconds``, ``metrics`` (Keras' logs)
    images    ``done`` of ``total`` images of a ``task``
    stage     what the step does next, in words (``text``): after the trainings, the choice, the test, the probe
    warning   ``text``: something the person running the study should read, in plain words
"""

from __future__ import annotations

import json
import math
import os
import time

PROGRESS_FILE_VARIABLE = "STUDY_PROGRESS_FILE"


def report(event: str, **fields) -> None:
    """Append one event to the runner's progress file; nothing when no runner listens (a notebook opened by hand)."""
    path = os.environ.get(PROGRESS_FILE_VARIABLE)
    if not path:
        return
    line = json.dumps(_json_ready({"event": event, "time": time.time(), **fields}), default=_plain) + "\n"
    with open(path, "a", encoding="utf-8") as channel:  # one short write per line: the runner never reads half a one
        channel.write(line)


def _json_ready(value):
    """NaN as None, in dicts and lists too (JSON has no NaN: a loss that diverged)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _plain(value):
    """NumPy and Keras scalars as Python floats (NaN as None: JSON has no NaN)."""
    number = float(value)
    return None if math.isnan(number) else number


def warn(text: str) -> None:
    """Show ``text`` to the person running the study (the runner prints each warning once) and in the notebook."""
    print(f"warning: {text}", flush=True)
    report("warning", text=text)


class ImagesDone:
    """Tells the runner how many of ``total`` images a ``task`` has done, at most every ``interval`` seconds (and
    always the last count)."""

    def __init__(self, task: str, total: int, interval: float = 1.0):
        self.task, self.total, self.interval = task, int(total), interval
        self.done, self._told = 0, -math.inf

    def add(self, count: int) -> None:
        self.update(self.done + count)

    def update(self, done: int) -> None:
        self.done = min(int(done), self.total)
        now = time.monotonic()
        if self.done >= self.total or now - self._told >= self.interval:
            self._told = now
            report("images", task=self.task, done=self.done, total=self.total)
