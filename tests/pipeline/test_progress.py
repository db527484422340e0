"""What a person sees while the study runs: the progress channel, the time left, the live line, no noise."""

import io
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import copy_of_the_study, write_params

from lib.core import progress as kernel_progress
from lib.core.config import load_params
from lib.core.devices import Devices, missing_gpu_warning
from lib.core.paths import PROJECT_ROOT
from lib.data.audit import warning_sentences
from lib.pipeline.progress import (
    Display,
    EpochTimes,
    QuietStderr,
    StepProgress,
    Trainings,
    duration,
    is_noise,
    model_phases,
    read_events,
    run_seconds_left,
    step_seconds,
    training_seconds_left,
)

# What a healthy CPU run printed, several times per step, before the runner filtered it
NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796672208.794806    3161 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796672208.796096    3161 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796672214.246441    3161 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796672215.383067    3161 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset; signature=input_dataset:variant>",
    "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication (including code and "
    "outputs) is sent in plain text and is susceptible to eavesdropping.",
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.",
]
# The same words in a run's output, each distinctive enough to find
NOISE_WORDS = ["absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cuInit",
               "use_unbounded_threadpool", "running over TCP without encryption", "KeyboardInterrupt caught",
               "Executing:"]


def test_the_frameworks_start_up_lines_are_noise_and_real_errors_are_not():
    assert all(is_noise(line) for line in NOISE_LINES)
    real = ["E0000 00:00:1796672215.383067    3161 bfc_allocator.cc:482] Allocator ran out of memory",
            "W0000 00:00:1796672215.383067    3161 op_kernel.cc:1840] OP_REQUIRES failed at conv_ops.cc:1068",
            "Traceback (most recent call last):", "warning: 3 extreme image(s) ..."]
    assert not any(is_noise(line) for line in real)
    # the CUDA probe failing is a real error where the machine has GPUs
    assert not is_noise(NOISE_LINES[3], machine_has_gpus=True) and is_noise(NOISE_LINES[1], machine_has_gpus=True)


def test_quiet_stderr_keeps_a_child_processes_noise_out_and_passes_the_rest(capfd):
    child = "import os; os.write(2, ({!r} + '\\n').encode()); os.write(2, b'a real error\\n'); os.write(2, b'no end')"
    cleared = []  # the progress line is cleared before a line of stderr is written, never for noise alone
    with QuietStderr(before_write=lambda: cleared.append(True)):
        os.write(2, (NOISE_LINES[1] + "\n").encode())
        time.sleep(0.5)
        assert not cleared
        os.write(2, (NOISE_LINES[3] + "\nthe runner's own line\n").encode())
        subprocess.run([sys.executable, "-c", child.format(NOISE_LINES[0])], check=True)  # its last line unended
    subprocess.run([sys.executable, "-c", child.format(NOISE_LINES[0])], check=True)  # after the block: all of it
    err = capfd.readouterr().err
    assert err.count("a real error") == 2 and err.count("no end") == 2 and "the runner's own line" in err
    assert err.count("absl::InitializeLog") == 1 and "cuInit" not in err and "oneDNN" not in err
    assert cleared


def test_the_kernel_side_writes_events_only_where_the_runner_listens(tmp_path, monkeypatch):
    channel = tmp_path / "step.jsonl"
    monkeypatch.delenv(kernel_progress.PROGRESS_FILE_VARIABLE, raising=False)
    kernel_progress.report("phase", phase="head", epochs=3)
    assert not channel.exists()
    monkeypatch.setenv(kernel_progress.PROGRESS_FILE_VARIABLE, str(channel))
    kernel_progress.report("epoch", phase="head", epoch=1, epochs=3, metrics={"val_loss": float("nan")})
    images = kernel_progress.ImagesDone("image features", 10, interval=3600)
    for _ in range(10):
        images.add(1)  # told once at the first image, once at the last: not every image
    events, end = read_events(channel)
    assert [e["event"] for e in events] == ["epoch", "images", "images"]
    assert events[0]["metrics"] == {"val_loss": None} and [e["done"] for e in events[1:]] == [1, 10]
    assert end == channel.stat().st_size
    with channel.open("a") as f:
        f.write('{"event": "images", "task"')  # half a line: read once it is complete
    assert read_events(channel, end) == ([], end)


CNN = Trainings("cnn", count=4, phases=(("training", 25),))
MOBILENET = Trainings("mobilenetv2", count=1, phases=(("head", 10), ("fine-tune", 5)))


def measured_cnn_step() -> EpochTimes:
    """A CNN step of two trainings: 20 epochs then 10, each epoch 30 s but the first (40 s), 60 s outside them."""
    events = []
    for epochs in (20, 10):
        events += [{"event": "training"}, {"event": "phase", "phase": "training", "epochs": 25}]
        events += [{"event": "epoch", "phase": "training", "seconds": 40.0 if e == 0 else 30.0} for e in range(epochs)]
    times = EpochTimes()
    times.add_step("cnn", events, seconds=60.0 + 40 + 19 * 30 + 40 + 9 * 30)
    return times


def test_a_fit_takes_as_long_as_this_runs_fits_of_its_phase_took():
    times = measured_cnn_step()
    assert times.fit_seconds("cnn", "training") == (40 + 19 * 30 + 40 + 9 * 30) / 2
    assert times.other_seconds["cnn"] == [pytest.approx(60.0)]
    assert times.fit_seconds("mobilenetv2", "head") is None
    running = times.with_fits("cnn", [("training", [10.0])])  # a running step's own fits count too, not for good
    assert running.fit_seconds("cnn", "training") == (610 + 310 + 10) / 3 and times.fit_seconds("cnn", "training") == 460


def test_a_step_is_estimated_from_this_runs_epochs_else_from_the_previous_run():
    times = measured_cnn_step()
    previous = {"rounds/seed-43/02_cnn.ipynb": {"seconds": 999.0}, "04_comparison.ipynb": {"seconds": 50.0}}
    # a later round trains one model, as long as this run's did on average (460 s), and 60 s outside it; this run's
    # times come first
    one = Trainings("cnn", 1, CNN.phases)
    assert step_seconds("rounds/seed-43/02_cnn.ipynb", one, times, previous) == pytest.approx(460 + 60)
    assert step_seconds("04_comparison.ipynb", None, times, previous) == 50.0
    assert step_seconds("rounds/seed-43/03_mobilenetv2.ipynb", MOBILENET, times, previous) is None
    seconds, complete = run_seconds_left([("rounds/seed-43/02_cnn.ipynb", one), ("04_comparison.ipynb", None)],
                                         times, previous)
    assert (seconds, complete) == (pytest.approx(520 + 50), True)
    seconds, complete = run_seconds_left([("rounds/seed-43/03_mobilenetv2.ipynb", MOBILENET),
                                          ("04_comparison.ipynb", None)], times, previous)
    assert (seconds, complete) == (50.0, False)


def test_the_time_left_in_a_training_and_its_step():
    # epoch 5 of 25 of the second of four trainings, at 30 s an epoch; no other fit measured: full budgets
    training, step = training_seconds_left(CNN, 2, "training", 5, 25, 30.0, EpochTimes())
    assert training == 20 * 30 and step == 20 * 30 + 2 * 25 * 30
    # after the head's epoch 4 of 10: its 6 more epochs at 2 s, then the fine-tune's 5 at the head's pace
    training, step = training_seconds_left(MOBILENET, 1, "head", 4, 10, 2.0, EpochTimes())
    assert training == step == 6 * 2 + 5 * 2
    # the later training takes as long as this run's did (460 s)
    _, step = training_seconds_left(CNN, 3, "training", 25, 25, 30.0, measured_cnn_step())
    assert step == 460
    # the head's fits measured at 12 s: the fine-tune after it, not timed yet, at the head's epoch pace
    head = EpochTimes().with_fits("mobilenetv2", [("head", [5.0, 4.0, 3.0])])
    training, step = training_seconds_left(Trainings("mobilenetv2", 2, MOBILENET.phases), 1, "fine-tune", 1, 5, 2.0,
                                           head)
    assert training == 4 * 2 and step == 4 * 2 + 12 + 5 * 2


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 40.4, 89, 150, 14 * 60 + 10, 125 * 60)] == ["0 s", "40 s", "1 min", "3 min",
                                                                                 "14 min", "2 h 5 min"]


def epoch_events(method: str, number: int, of: int, epochs: int, start: float = 0.0) -> list[dict]:
    events = [{"event": "training", "method": method, "number": number, "of": of, "time": start},
              {"event": "phase", "phase": "training", "epochs": epochs, "time": start}]
    return events + [{"event": "epoch", "phase": "training", "epoch": e, "epochs": epochs, "seconds": 30.0,
                      "metrics": {"val_accuracy": 0.9, "val_loss": 0.3}, "time": start + 30 * e}
                     for e in range(1, epochs + 1)]


def show(events: list[dict], live: bool, warned: set | None = None) -> str:
    stream = io.StringIO()
    step = StepProgress(Display(stream, live=live, width=200), CNN, EpochTimes(), set() if warned is None else warned)
    for event in events:
        step.show(event)
    step.display.clear()
    return stream.getvalue()


def test_without_a_terminal_every_epoch_is_a_line_of_its_own_and_images_at_most_once_a_minute():
    images = [{"event": "images", "task": "image features", "done": d, "total": 100, "time": t}
              for d, t in ((10, 0), (20, 30), (30, 59), (40, 61), (90, 100), (100, 101))]
    stage = {"event": "stage", "text": "testing the chosen model, saving it", "time": 102}
    text = show(epoch_events("logit adjustment", 3, 4, 2) + images + [stage], live=False)
    assert "\r" not in text
    lines = text.splitlines()
    # the fourth training is counted at the whole budget of the step's trainings (25 epochs), at this one's pace
    assert lines[0] == ("    logit adjustment, 3 of 4 | epoch 1/2 | 30 s left, step 13 min | val_accuracy 0.900 | "
                        "val_loss 0.300 | 30 s/epoch")
    assert lines[1].startswith("    logit adjustment, 3 of 4 | epoch 2/2 | 0 s left, step 13 min | ")
    assert lines[2:] == [*(f"    image features: {d} of 100 images" for d in (10, 40, 100)),
                         "    testing the chosen model, saving it"]


def test_on_a_terminal_the_progress_line_is_redrawn_in_place_and_cut_to_its_width():
    stream = io.StringIO()
    display = Display(stream, live=True, width=30)
    display.progress("first progress")
    display.progress("a progress line far longer than thirty characters")
    display.line("a line that stays")
    display.progress("next")
    display.clear()
    assert stream.getvalue() == ("\r\x1b[Kfirst progress" "\r\x1b[Ka progress line far longer..."
                                 "\r\x1b[Ka line that stays\n" "\r\x1b[Knext" "\r\x1b[K")


def test_each_warning_is_shown_once_a_run_on_a_line_of_its_own():
    warned = set()
    warning = {"event": "warning", "text": "3 extreme image(s): kept"}
    first = show([warning, *epoch_events("class weight", 1, 1, 1), warning], live=True, warned=warned)
    assert first.count("warning: 3 extreme image(s): kept\n") == 1
    assert show([warning], live=False, warned=warned) == ""


def test_the_audits_warnings_in_words_and_a_missing_gpu():
    table = pd.DataFrame({"relpath": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "y", "y"],
                          "warning": ["label conflict: identical bytes also under class 'y'", "8x9 pixels", "9x9"],
                          "excluded": [True, False, False]})
    conflicts, extreme = warning_sentences(table)
    assert conflicts.startswith("1 file(s) whose identical bytes") and "left out (audit.keep_label_conflicts)" in conflicts
    assert extreme.startswith("2 extreme image(s)") and "kept (audit.exclude_extreme_images)" in extreme
    assert warning_sentences(table.iloc[:0]) == []
    cpu = Devices("tensorflow", "2", "3", "cpu", ("CPU",))
    assert "2 GPU(s) but Keras' tensorflow backend sees none" in missing_gpu_warning(cpu, ("0", "1"))
    assert missing_gpu_warning(cpu, ()) is None
    assert missing_gpu_warning(Devices("jax", "0", "3", "gpu", ("H100",)), ("0",)) is None


# The runner's output on the tiny study, captured as a log file or CI captures it (no terminal)


def run_the_runner(params_file, *arguments) -> str:
    """``python -m lib.run`` as ./run_all.sh calls it, its output captured (not a terminal): stdout and stderr."""
    environment = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    finished = subprocess.run([sys.executable, "-m", "lib.run", str(params_file), *arguments], cwd=PROJECT_ROOT,
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert finished.returncode == 0, finished.stdout[-3000:]
    return finished.stdout


@pytest.mark.slow
def test_the_runners_output_shows_each_epoch_the_time_left_and_a_data_warning_and_no_noise(tiny_study, tmp_path):
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    params_file = write_params(tmp_path / "tiny.yaml", values)
    # the CNN trains again (2 epochs) in both rounds; the audit warns that every 48 x 40 image is extreme (kept)
    output = run_the_runner(params_file, "--set", "cnn.training.epochs=2", "--set", "audit.min_image_side=41")
    assert "\r" not in output
    for noise in NOISE_WORDS:
        assert noise not in output
    assert output.count("warning: 30 extreme image(s)") == 1
    lines = output.splitlines()
    methods = len(load_params(params_file).minority.methods)
    for number in range(1, methods + 1):
        for epoch in (1, 2):
            assert sum(f", {number} of {methods} | epoch {epoch}/2 | " in line for line in lines) == 1
    assert sum(", 1 of 1 | epoch 2/2 | " in line for line in lines) == 1  # the second round trains the chosen one
    assert all(" left, step " in line for line in lines if " | epoch " in line)
    # the previous run's steps.json times the first steps; this run's epochs the later ones
    assert [line for line in lines if line.startswith("[1/7] Data audit") and " min left)" in line]
    assert [line for line in lines if line.startswith("[4/7] Custom CNN, round seed-2") and " left)" in line]
    # the executed notebooks keep none of the frameworks' start-up lines either
    for notebook in sorted((reports / "tiny").rglob("*.ipynb")):
        text = notebook.read_text()
        assert not [noise for noise in NOISE_WORDS if noise in text], notebook


@pytest.mark.slow
def test_verbose_shows_the_frameworks_lines(tiny_study, tmp_path):
    _, values = copy_of_the_study(tiny_study, tmp_path)
    params_file = write_params(tmp_path / "tiny.yaml", values)
    output = run_the_runner(params_file, "--verbose", "--set", "audit.samples_per_class=2")  # the audit runs again
    assert "absl::InitializeLog" in output and "oneDNN custom operations" in output
    assert "images inspected: 30 of 30 images" in output


@pytest.mark.slow
def test_the_phases_the_runner_expects_are_those_the_models_histories_name(tiny_study):
    params_file, root, _, _ = tiny_study
    params = load_params(params_file)
    for model in ("cnn", "mobilenetv2"):
        history = pd.read_csv(root / "rounds" / "seed-1" / model / "history.csv")
        assert list(dict.fromkeys(history["phase"])) == [name for name, _ in model_phases(params, model)]


def test_fit_phase_tells_each_epoch_to_the_runner(tmp_path, monkeypatch):
    import keras
    import numpy as np

    from lib.core.config import PhaseParams
    from lib.data.inputs import Batches
    from lib.training.train import fit_phase

    channel = tmp_path / "step.jsonl"
    monkeypatch.setenv(kernel_progress.PROGRESS_FILE_VARIABLE, str(channel))
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(16, 3)).astype("float32"), rng.integers(0, 2, 16)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    batches = Batches(x[None], labels, n_classes=2, batch_size=8)
    fit_phase(model, batches, batches, PhaseParams(learning_rate=1e-3, epochs=2, patience=5), name="head",
              class_weight=None, verbose=0)
    events, _ = read_events(channel)
    assert [(e["event"], e.get("epoch")) for e in events] == [("phase", None), ("epoch", 1), ("epoch", 2)]
    assert events[0] | {"time": 0} == {"event": "phase", "phase": "head", "epochs": 2, "time": 0}
    assert {"val_accuracy", "val_loss"} <= set(events[2]["metrics"]) and events[2]["seconds"] > 0
    json.dumps(events)  # plain JSON: numbers, no NumPy


def test_the_runner_shows_a_steps_events_as_its_kernel_writes_them_and_times_the_steps_after_it(tiny_params_file):
    from lib.pipeline.progress import RunProgress
    from lib.pipeline.steps import planned_steps

    params = load_params(tiny_params_file)
    plan = planned_steps(params)
    audit, cnn, later_cnn = plan[0], plan[1], next(p for p in plan[2:] if p.step.model == "cnn")
    stream = io.StringIO()
    previous = {audit.label: {"seconds": 100.0}}
    with RunProgress(plan, params, previous, display=Display(stream, live=False)) as watch:
        assert watch.time_left(audit) == " (at least 2 min left)"  # only the audit is timed, by the previous run
        channel = watch.environment(cnn)[kernel_progress.PROGRESS_FILE_VARIABLE]
        with watch.watching(cnn):
            with open(channel, "a") as kernel:
                for event in epoch_events("class weight", 1, 1, 2):
                    kernel.write(json.dumps(event) + "\n")
        watch.finished(cnn, {"seconds": 80.0, "reused": False})
        left = watch.time_left(later_cnn)
    lines = stream.getvalue().splitlines()
    assert [line[:38] for line in lines] == ["    class weight, 1 of 1 | epoch 1/2 |",
                                             "    class weight, 1 of 1 | epoch 2/2 |"]
    # each later round's CNN: one training as long as this run's (2 epochs of 30 s), and 80 - 60 s outside it;
    # MobileNetV2 and the rest untimed
    later_rounds = sum(p.step.model == "cnn" for p in plan[plan.index(later_cnn):])
    assert later_rounds == len(params.evaluation.seeds) - 1
    assert left == f" (at least {duration(later_rounds * (2 * 30 + 20))} left)"
    assert not os.path.exists(channel)  # the channel's folder goes with the run


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_steps_side_by_side_write_plain_lines_named_by_their_step_and_another_process_shows_nothing(
        tiny_params_file, monkeypatch):
    from lib.pipeline.progress import RunProgress
    from lib.pipeline.steps import planned_steps

    params = load_params(tiny_params_file)
    plan = planned_steps(params)
    cnn = plan[1]

    def shown(**options) -> str:
        monkeypatch.setattr(sys, "stdout", Terminal())
        monkeypatch.delenv("TERM", raising=False)
        with RunProgress(plan, params, {}, **options) as watch:
            with watch.watching(cnn):
                channel = watch.environment(cnn).get(kernel_progress.PROGRESS_FILE_VARIABLE)
                if channel:
                    with open(channel, "a") as kernel:
                        kernel.writelines(json.dumps(event) + "\n" for event in epoch_events("class weight", 1, 1, 1))
        return sys.stdout.getvalue()

    assert shown().startswith("\r\x1b[K    class weight, 1 of 1 | epoch 1/1 | ")  # one step at a time: redrawn
    side_by_side = shown(jobs=2)
    assert side_by_side.startswith(f"    {cnn.label}: class weight, 1 of 1 | epoch 1/1 | ")
    assert side_by_side.endswith("\n") and "\r" not in side_by_side
    assert shown(shows=False) == ""  # a run across processes: process 0 shows the progress, the others' kernels
    with RunProgress(plan, params, {}, shows=False) as watch:  # write none
        assert watch.environment(cnn) == {}
