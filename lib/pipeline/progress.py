"""What a person watching ``./run_all.sh`` sees: a line per step with the run's time left, a progress line for the
work inside the step, and none of the frameworks' start-up chatter.

Each step's kernel appends its events to a file the runner names (`lib.core.progress`: each training's method and
epochs, images done, warnings); `RunProgress.watching` tails that file while papermill runs the step and shows it:
on a terminal as one line redrawn in place, elsewhere (a pipe, a log file, CI) as plain lines, one per epoch and
the images at most once a minute. Each warning is shown once per run. The run's time left (`run_seconds_left`)
counts each training still to run as long as this run's trainings of that model took, epoch by epoch as they ran,
and falls back on the previous run's ``steps.json`` for a step whose model has not trained yet.

`QuietStderr` keeps the frameworks' start-up lines (`NOISE`) out of the terminal: the kernels' C++ logs and
ipykernel's own lines reach the runner's stderr, filtered there (the kernels start with ipykernel's capture of
low-level output off, so that none of it lands in the executed notebooks either). ``--verbose`` shows them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lib.core.backends import visible_gpus
from lib.core.progress import PROGRESS_FILE_VARIABLE
from lib.core.study import study_model
from lib.pipeline.steps import PlannedStep

# The lines every healthy run prints, which read like failures: shown with --verbose only.
NOISE = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\] ",  # TensorFlow's and XLA's C++ log below warnings (TF_CPP_MIN_LOG_LEVEL misses
    # what they log before absl is set up: the oneDNN notice, the CUDA driver probe)
    r"^\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption",
    r"^\[IPKernelApp\] ERROR \| KeyboardInterrupt caught in kernel",  # a finished kernel slow to shut down is
    # interrupted (a person's Ctrl-C is reported by the runner itself)
    r"^[EW]\d{4} [\d:.]+\s+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool ",
))
# TensorFlow's CUDA probe failing: noise on a machine without GPUs, a real error on one with them.
NO_GPU_NOISE = re.compile(r"^E\d{4} [\d:.]+\s+\d+ cuda_(platform|executor)\.cc:\d+\] failed call to cuInit")


def is_noise(line: str, machine_has_gpus: bool = False) -> bool:
    """Whether a line of a kernel's (or the runner's) stderr is start-up chatter (`NOISE`)."""
    return any(p.search(line) for p in NOISE) or (not machine_has_gpus and bool(NO_GPU_NOISE.search(line)))


class QuietStderr:
    """While the ``with`` block runs, this process's stderr (file descriptor 2, which the kernels it starts
    inherit) goes through a pipe; a thread passes on every line but the noise (`is_noise`), calling
    ``before_write`` first (`Display.clear`: a line of stderr must not land on the end of the progress line)."""

    def __init__(self, machine_has_gpus: bool = False, before_write=None):
        self.machine_has_gpus, self.before_write = machine_has_gpus, before_write

    def __enter__(self) -> QuietStderr:
        sys.stderr.flush()
        self._original = os.dup(2)
        reading, writing = os.pipe()
        os.dup2(writing, 2)
        os.close(writing)
        self._reader = threading.Thread(target=self._pass_on, args=(reading,), daemon=True)
        self._reader.start()
        return self

    def _pass_on(self, reading: int) -> None:
        pending = b""
        with os.fdopen(reading, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                self._write(lines)
        self._write([pending] if pending else [])

    def _write(self, lines: list[bytes]) -> None:
        kept = [line for line in lines if not is_noise(line.decode(errors="replace"), self.machine_has_gpus)]
        if kept:
            if self.before_write is not None:
                self.before_write()
            os.write(self._original, b"\n".join(kept) + b"\n")

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._original, 2)  # closes the pipe's last writer in this process: the reader sees its end
        # a process the kernel left behind may still hold the pipe: its lines keep coming through the thread
        self._reader.join(timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# The time left
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trainings:
    """What a model step trains: ``count`` models (one per minority-class method), each through ``phases``
    (name, epoch budget) in order."""

    model: str
    count: int
    phases: tuple[tuple[str, int], ...]


def model_phases(params, model: str) -> tuple[tuple[str, int], ...]:
    """A model's training phases, named as its history names them (`lib.training.recipes`), with their epoch
    budgets."""
    return study_model(model).phase_epochs(params)


def step_trainings(planned: PlannedStep, params) -> Trainings | None:
    """What ``planned`` trains (None: a step that trains nothing): every method in the first round, the one it
    chose afterwards (`lib.training.experiment.Experiment.methods_to_train`)."""
    model = planned.step.model
    if model is None:
        return None
    methods = len(params.minority.methods) if planned.round == planned.rounds.first else 1
    return Trainings(model, methods, model_phases(params, model))


@dataclass
class EpochTimes:
    """The epochs measured in this run, by (model, phase): each fit's epoch seconds, and the steps' seconds spent
    outside their epochs (decoding, caching, evaluating, saving) by model."""

    fits: dict[tuple[str, str], list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    other_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add_step(self, model: str | None, events: Iterable[dict], seconds: float | None) -> None:
        """A finished step's events (its progress file) and its wall time."""
        if model is None:
            return
        fits: list[tuple[str, list[float]]] = []
        for event in events:
            if event["event"] == "phase":
                fits.append((event["phase"], []))
            elif event["event"] == "epoch" and fits:
                fits[-1][1].append(float(event["seconds"]))
        for phase, epochs in fits:
            if epochs:
                self.fits[model, phase].append(epochs)
        if seconds is not None and fits:
            self.other_seconds[model].append(max(0.0, seconds - sum(sum(epochs) for _, epochs in fits)))

    def fit_seconds(self, model: str, phase: str) -> float | None:
        """How long a fit of the phase takes: the mean of this run's (their early stopping, and the first epoch's
        tracing of the model, included); None when none ran yet."""
        fits = self.fits.get((model, phase), [])
        return statistics.mean(sum(fit) for fit in fits) if fits else None

    def with_fits(self, model: str, fits: Iterable[tuple[str, list[float]]]) -> EpochTimes:
        """These epoch times and more fits of ``model`` ((phase, epoch seconds) each): a running step's own."""
        more = EpochTimes(defaultdict(list, {k: list(v) for k, v in self.fits.items()}), self.other_seconds)
        for phase, epochs in fits:
            if epochs:
                more.fits[model, phase].append(epochs)
        return more


def step_seconds(label: str, trainings: Trainings | None, measured: EpochTimes,
                 previous: Mapping[str, dict]) -> float | None:
    """How long a step not yet begun will take: its trainings as long as this run's of the same model and phases
    took (`EpochTimes.fit_seconds`), and its time outside them, when this run has trained that model already; else
    its wall time in the previous run's ``steps.json``; None when neither is known."""
    if trainings is not None and all(measured.fit_seconds(trainings.model, phase) is not None
                                     for phase, _ in trainings.phases):
        one = sum(measured.fit_seconds(trainings.model, phase) for phase, _ in trainings.phases)
        other = measured.other_seconds.get(trainings.model)
        return trainings.count * one + (statistics.median(other) if other else 0.0)
    seconds = previous.get(label, {}).get("seconds")
    return None if seconds is None else float(seconds)


def run_seconds_left(steps: Iterable[tuple[str, Trainings | None]], measured: EpochTimes,
                     previous: Mapping[str, dict]) -> tuple[float, bool]:
    """The time the ``steps`` (label, what it trains) still to run will take, one after another: (seconds, whether
    every step could be estimated; False: the seconds are a floor)."""
    estimates = [step_seconds(label, trainings, measured, previous) for label, trainings in steps]
    return sum(e for e in estimates if e is not None), all(e is not None for e in estimates)


def training_seconds_left(trainings: Trainings, number: int, phase: str, epoch: int, epochs: int,
                          epoch_seconds: float, measured: EpochTimes) -> tuple[float, float]:
    """(this training's, this step's) seconds left after ``epoch`` of ``epochs`` of ``phase`` in training ``number``
    (from 1), whose epochs take ``epoch_seconds``: the rest of this phase's epochs (early stopping may end them
    sooner), then each later phase and training as long as this run's fits of that phase took
    (`EpochTimes.fit_seconds`; a phase not timed yet: its whole budget at ``epoch_seconds``)."""
    def fit(name: str, budget: int) -> float:
        measured_fit = measured.fit_seconds(trainings.model, name)
        return budget * epoch_seconds if measured_fit is None else measured_fit

    names = [name for name, _ in trainings.phases]
    later_phases = trainings.phases[names.index(phase) + 1:] if phase in names else ()
    left = (epochs - epoch) * epoch_seconds + sum(fit(name, budget) for name, budget in later_phases)
    each_later_training = sum(fit(name, budget) for name, budget in trainings.phases)
    return left, left + max(0, trainings.count - number) * each_later_training


def duration(seconds: float) -> str:
    """``seconds`` in words a person reads at a glance: "40 s", "14 min", "2 h 5 min"."""
    seconds = max(0, int(seconds + 0.5))
    if seconds < 60:
        return f"{seconds} s"
    minutes = int(seconds / 60 + 0.5)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# ----------------------------------------------------------------------------------------------------------------
# Showing it
# ----------------------------------------------------------------------------------------------------------------

PLAIN_IMAGES_INTERVAL = 60.0  # seconds between two lines of images done, without a terminal


class Display:
    """Lines for a person: on a terminal (``live``) the progress line is redrawn in place, ended by any other line;
    elsewhere every progress line is a line of its own."""

    def __init__(self, stream=None, live: bool | None = None, width: int | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() and os.environ.get("TERM") != "dumb" if live is None else live
        self.width = width
        self._shown = False
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        """A line that stays."""
        with self._lock:
            self._write(("\r\x1b[K" if self._shown else "") + text + "\n")
            self._shown = False

    def progress(self, text: str) -> None:
        """The progress line: redrawn in place on a terminal, else a line that stays."""
        if not self.live:
            self.line(text)
            return
        width = self.width or shutil.get_terminal_size().columns
        if len(text) >= width:
            text = text[:max(width - 4, 1)] + "..."
        with self._lock:
            self._write("\r\x1b[K" + text)
            self._shown = True

    def clear(self) -> None:
        """Remove the progress line (on a terminal)."""
        with self._lock:
            if self._shown:
                self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class StepProgress:
    """One step's events (`lib.core.progress`) as lines: the training (method, number of trainings), the epoch
    with its validation scores and the time left, images done of total; warnings once per run (``warned``)."""

    def __init__(self, display: Display, trainings: Trainings | None, measured: EpochTimes, warned: set[str],
                 prefix: str = "    "):
        self.display, self.trainings, self.measured, self.warned = display, trainings, measured, warned
        self.prefix = prefix
        self.training: dict | None = None
        self.fits: list[tuple[str, list[float]]] = []  # this step's fits so far: (phase, epoch seconds)
        self._images_told: dict[str, float] = {}

    def show(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "warning":
            if event["text"] not in self.warned:
                self.warned.add(event["text"])
                self.display.line(f"{self.prefix}warning: {event['text']}")
        elif kind == "training":
            self.training = event
            if event.get("reused"):
                self.display.progress(f"{self.prefix}{self._which()}: reused the training an interrupted run finished")
        elif kind == "phase":
            self.fits.append((event["phase"], []))
        elif kind == "epoch":
            if not self.fits:
                self.fits.append((event["phase"], []))
            self.fits[-1][1].append(float(event["seconds"]))
            self.display.progress(self.prefix + self.epoch_line(event))
        elif kind == "images":
            self._images(event)
        elif kind == "stage":
            self.display.progress(f"{self.prefix}{event['text']}")

    def _which(self) -> str:
        t = self.training or {}
        return f"{t.get('method', 'training')}, {t.get('number', 1)} of {t.get('of', 1)}"

    def epoch_line(self, event: dict) -> str:
        """E.g. "logit adjustment, 3 of 4 | head epoch 7/25 | 2 min left, step 6 min | val_accuracy 0.912 |
        val_loss 0.311 | 12 s/epoch": what a person looks for first comes first (a terminal cuts the line's end)."""
        phase = "" if event["phase"] == "training" else f"{event['phase']} "
        parts = [self._which(), f"{phase}epoch {event['epoch']}/{event['epochs']}"]
        fit = self.fits[-1][1] if self.fits else [float(event["seconds"])]
        each = statistics.mean(fit[1:] or fit)
        if self.trainings is not None and event.get("epochs"):
            finished = self.measured.with_fits(self.trainings.model, self.fits[:-1])
            training, step = training_seconds_left(self.trainings, int((self.training or {}).get("number", 1)),
                                                   event["phase"], int(event["epoch"]), int(event["epochs"]), each,
                                                   finished)
            parts.append(f"{duration(training)} left, step {duration(step)}")
        metrics = event.get("metrics") or {}
        parts += [f"{name} {metrics[name]:.3f}" for name in ("val_accuracy", "val_loss") if metrics.get(name) is not None]
        parts.append(f"{each:.0f} s/epoch" if each >= 1 else f"{each:.1f} s/epoch")
        return " | ".join(parts)

    def _images(self, event: dict) -> None:
        task, done, total = event["task"], int(event["done"]), int(event["total"])
        text = f"{self.prefix}{task}: {done:,} of {total:,} images"
        if self.display.live:
            self.display.progress(text)
            return
        last = self._images_told.get(task)
        if last is None or done >= total or event["time"] - last >= PLAIN_IMAGES_INTERVAL:
            self._images_told[task] = event["time"]
            self.display.line(text)


def read_events(path: Path, start: int = 0) -> tuple[list[dict], int]:
    """The complete JSON lines of a progress file from byte ``start``: (events, where the next read starts)."""
    if not path.is_file():
        return [], start
    with path.open("rb") as channel:
        channel.seek(start)
        data = channel.read()
    complete = data[:data.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
    return events, start + len(complete)


class RunProgress:
    """The runner's side of the progress channel for one run (`lib.run.run_study`): a file per step for its kernel
    (`environment`), a thread that shows it while the step runs (`watching`), the run's time left (`time_left`),
    and, unless ``verbose``, `QuietStderr` around it all (``with``).

    ``shows`` False (a run across processes, other than process 0): the kernels tell nothing, process 0 shows it.
    ``jobs`` above 1: steps run side by side, so every line is a line of its own, named by its step.
    """

    POLL_SECONDS = 0.5

    def __init__(self, plan: list[PlannedStep], params, previous: Mapping[str, dict], *, verbose: bool = False,
                 jobs: int = 1, shows: bool = True, display: Display | None = None):
        self.plan, self.previous, self.verbose, self.jobs, self.shows = plan, previous, verbose, jobs, shows
        self.trainings = {p.label: step_trainings(p, params) for p in plan}
        self.display = display or Display(live=False if jobs > 1 else None)
        self.measured = EpochTimes()
        self.finished_labels: set[str] = set()
        self.warned: set[str] = set()
        self._folder: Path | None = None
        self._quiet: QuietStderr | None = None

    def __enter__(self) -> RunProgress:
        self._folder = Path(tempfile.mkdtemp(prefix="study-progress-"))
        if not self.verbose:
            self._quiet = QuietStderr(bool(visible_gpus()), before_write=self.display.clear).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.display.clear()
        if self._quiet is not None:
            self._quiet.__exit__(*exc)
        shutil.rmtree(self._folder, ignore_errors=True)

    def file(self, planned: PlannedStep) -> Path:
        return self._folder / (planned.label.replace("/", "__") + ".jsonl")

    def environment(self, planned: PlannedStep) -> dict[str, str]:
        """What the step's kernel needs to tell its progress (`lib.core.progress`)."""
        return {PROGRESS_FILE_VARIABLE: str(self.file(planned))} if self.shows and self._folder else {}

    @contextlib.contextmanager
    def watching(self, planned: PlannedStep) -> Iterator[None]:
        """Show the step's events while the block runs (it runs the step)."""
        if not self.shows or self._folder is None:
            yield
            return
        prefix = f"    {planned.label}: " if self.jobs > 1 else "    "
        step = StepProgress(self.display, self.trainings[planned.label], self.measured, self.warned, prefix)
        stop = threading.Event()

        def tail() -> None:
            position = 0
            while True:
                stopping = stop.wait(self.POLL_SECONDS)
                events, position = read_events(self.file(planned), position)
                for event in events:
                    step.show(event)
                if stopping:
                    return

        reader = threading.Thread(target=tail, daemon=True, name=f"progress of {planned.label}")
        reader.start()
        try:
            yield
        finally:
            stop.set()
            reader.join(timeout=10)
            self.display.clear()

    def finished(self, planned: PlannedStep, entry: Mapping) -> None:
        """A step ended (run or reused): what its epochs took counts in the time left."""
        self.finished_labels.add(planned.label)
        if self._folder is not None and not entry.get("reused"):
            events, _ = read_events(self.file(planned))
            self.measured.add_step(planned.step.model, events, entry.get("seconds"))

    def time_left(self, beginning: PlannedStep) -> str:
        """E.g. " (about 14 min left)": the steps from ``beginning`` on that have not ended, one after another;
        "at least" where some are not timed yet; "" where none is."""
        steps = [(p.label, self.trainings[p.label]) for p in self.plan[self.plan.index(beginning):]
                 if p.label not in self.finished_labels]
        seconds, complete = run_seconds_left(steps, self.measured, self.previous)
        if not seconds:
            return ""
        return f" ({'about' if complete else 'at least'} {duration(seconds)} left)"
