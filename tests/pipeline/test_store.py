"""The run store (`lib.pipeline.store`, `lib.core.store`, `lib.pipeline.interactive`): one writer per run, a publish
that a kill at any point leaves whole, state files written whole, scratch runs that are never stale.

The runner runs here with stand-ins for the notebooks (each writes its executed copy and nothing else), so that
every case takes seconds; tests/study/test_study.py runs the real notebooks.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_class_folders, write_params
from PIL import Image

from lib import run
from lib.core import store
from lib.core.config import ParamsError, load_params
from lib.core.paths import RunPaths
from lib.pipeline import interactive, job
from lib.pipeline import store as run_store


@pytest.fixture
def stand_ins(monkeypatch):
    """Notebooks and rendering replaced: ``stand_ins.executed`` lists the steps each run executed;
    ``stand_ins.during[label]`` is called while that step runs."""
    from lib.report import render as report_render

    executed, during = [], {}

    def stand_in(planned, params_file, run_paths, key=None, backend=None, overrides=None, environment=None):
        executed.append(planned.label)
        if planned.label in during:
            during[planned.label]()
        planned.executed_copy(run_paths).parent.mkdir(parents=True, exist_ok=True)
        planned.executed_copy(run_paths).write_text("{}")

    def render(notebook, html, pdf, title):
        html.write_text(f"<html>{notebook}</html>")
        pdf.write_bytes(b"%PDF-1.7")
        return 1

    monkeypatch.setattr(job, "execute_step", stand_in)
    monkeypatch.setattr(report_render, "render", render)
    stand_in.executed, stand_in.during = executed, during
    return stand_in


def published(params_file, *overrides) -> RunPaths:
    params = load_params(params_file, list(overrides))
    return RunPaths(params.reports_dir / params.run_name)


def overrides_of(run: RunPaths) -> list[str]:
    return json.loads(run.overrides.read_text())


def is_complete(run: RunPaths) -> bool:
    """A published run a reader can use: its steps, its params and its report."""
    return run.steps.is_file() and run.params_used.is_file() and run.report_html.is_file()


# ---------------------------------------------------------------------------------------------
# One writer per run
# ---------------------------------------------------------------------------------------------


def test_a_second_runner_of_the_same_run_stops_at_once_naming_the_first(tiny_params_file, stand_ins, capsys):
    """The first run (--set cnn.dropout=0.3) is in its audit when a second (--set cnn.dropout=0.6) starts: the
    second stops before writing anything, and the first publishes its own params."""
    second = {}

    def start_the_second():
        second["exit"] = run.main([str(tiny_params_file), "--set", "cnn.dropout=0.6"])
        second["stderr"] = capsys.readouterr().err

    stand_ins.during["01_data_audit.ipynb"] = start_the_second
    assert run.main([str(tiny_params_file), "--set", "cnn.dropout=0.3"]) == 0
    assert second["exit"] == 2
    message = second["stderr"].strip()
    assert len(message.splitlines()) == 1 and f"process {os.getpid()}" in message and "--wait" in message
    final = published(tiny_params_file)
    assert json.loads(final.params_used.read_text())["cnn"]["dropout"] == 0.3
    assert overrides_of(final) == ["cnn.dropout=0.3"]
    assert stand_ins.executed.count("01_data_audit.ipynb") == 1, "the second run executed nothing"


def test_with_wait_a_second_runner_queues_behind_the_first(tiny_params_file, stand_ins, capsys):
    link = published(tiny_params_file).root
    link.parent.mkdir(parents=True)
    holding, release = threading.Event(), threading.Event()

    def first_runner():
        with run_store.run_lock(link):
            holding.set()
            release.wait(120)

    holder = threading.Thread(target=first_runner)
    holder.start()
    holding.wait(60)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(record=run.run_study(tiny_params_file, wait=True)))
    waiter.start()
    deadline = time.monotonic() + 120
    seen = ""
    while "waiting for it to finish" not in seen and time.monotonic() < deadline:
        seen += capsys.readouterr().out
        time.sleep(0.05)
    assert "waiting for it to finish" in seen
    assert not stand_ins.executed, "nothing runs while the other holds the run"
    release.set()
    holder.join()
    waiter.join(120)
    assert result["record"] and is_complete(published(tiny_params_file))


def test_a_lock_is_released_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / "locks" / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
from lib.core import store
import time
with store.exclusive({str(lock)!r}, "the run"):
    print("held", flush=True)
    time.sleep(300)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.is_locked(lock)
        with pytest.raises(store.LockHeld, match=f"the run is being written by process {holder.pid}"):
            with store.exclusive(lock, "the run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with store.exclusive(lock, "the run"):  # no lock is left behind by a killed holder
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_child_that_dies_with_its_parent_ends_when_the_parent_is_killed(tmp_path):
    """What ends a killed runner's jobs and kernels (`lib.core.store.die_with_parent`)."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", '''
import os, time
from lib.core import store
store.die_with_parent({{parent}})
open({str(pid_file)!r}, "w").write(str(os.getpid()))
time.sleep(300)
'''.replace("{{parent}}", str(__import__("os").getpid()))])
time.sleep(300)
"""])
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the child outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended
        return stat.read().split(")")[-1].split()[0] != "Z"


# ---------------------------------------------------------------------------------------------
# Publish: one atomic switch, finished by the next run after a kill at any point
# ---------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for a kill at one point of publish: nothing after it runs."""


def _kill(*args, **kwargs):
    raise Killed


PUBLISH_POINTS = [
    (run_store, "move_into_versions"),  # after the journal is written
    (store, "switch_link"),  # after the finished run is in .runs/, before readers see it
    (run_store, "copy_report"),  # after the switch, before reports/report.html
    (run_store, "prune_versions"),  # before older versions are pruned
]


@pytest.mark.parametrize("module, point", PUBLISH_POINTS, ids=[p for _, p in PUBLISH_POINTS])
def test_a_kill_at_any_point_of_publish_leaves_a_whole_run_and_the_next_run_finishes_it(
        tiny_params_file, stand_ins, capsys, module, point):
    assert run.main([str(tiny_params_file), "--set", "cnn.dropout=0.3"]) == 0
    link = published(tiny_params_file)
    before = link.root.resolve()
    with pytest.MonkeyPatch.context() as kill, pytest.raises(Killed):
        kill.setattr(module, point, _kill)
        run.run_study(tiny_params_file, overrides=["cnn.dropout=0.6"])
    assert is_complete(link), "a reader finds a whole run, the old one or the new"
    assert overrides_of(link) in (["cnn.dropout=0.3"], ["cnn.dropout=0.6"])
    stand_ins.executed.clear()
    capsys.readouterr()
    run.run_study(tiny_params_file, overrides=["cnn.dropout=0.6"])
    assert "an interrupted publish of 'tiny' was found: finishing it" in capsys.readouterr().out
    assert stand_ins.executed == ["05_report.ipynb"], "nothing finished is computed again"
    assert overrides_of(link) == ["cnn.dropout=0.6"] and link.root.resolve() != before
    assert (link.root.parent / "report.html").read_text() == link.report_html.read_text()
    assert not run_store.journal_of(link.root).exists()
    versions = [p for p in run_store.versions_of(link.root).iterdir() if p.is_dir()]
    assert len(versions) <= run_store.KEEP_VERSIONS and link.root.resolve() in versions


def test_publish_switches_a_link_and_keeps_the_version_before_for_its_readers(tiny_params_file, stand_ins):
    run.run_study(tiny_params_file)
    link = published(tiny_params_file).root
    first = link.resolve()
    run.run_study(tiny_params_file, overrides=["cnn.dropout=0.3"])
    second = link.resolve()
    assert link.is_symlink() and first != second and is_complete(RunPaths(first)), "the reader of the first is fine"
    run.run_study(tiny_params_file, overrides=["cnn.dropout=0.4"])
    assert not first.exists() and second.exists(), "older versions are pruned"


def test_a_run_published_as_a_plain_folder_becomes_a_version(tiny_params_file, stand_ins):
    run.run_study(tiny_params_file)
    link = published(tiny_params_file).root
    folder = link.resolve()
    link.unlink()
    folder.rename(link)  # as runs were published before versions
    run.run_study(tiny_params_file)
    assert link.is_symlink() and stand_ins.executed.count("01_data_audit.ipynb") == 1, "reused from the old folder"


def test_ctrl_c_during_publish_lands_after_it(tiny_params_file, stand_ins, monkeypatch):
    real = run_store.copy_report

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # held back until the publish is complete
        real(*args)

    monkeypatch.setattr(run_store, "copy_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.run_study(tiny_params_file)
    link = published(tiny_params_file)
    assert is_complete(link) and not run_store.journal_of(link.root).exists()


# ---------------------------------------------------------------------------------------------
# State files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("torn", ["progress", "steps"])
def test_a_torn_state_file_ends_the_run_with_one_line_naming_it(tiny_params_file, stand_ins, capsys, torn):
    run.run_study(tiny_params_file)
    final = published(tiny_params_file)
    if torn == "progress":
        staging = run_store.staging_of(final.root)
        staging.mkdir()
        file = run_store.progress_of(staging)
    else:
        file = final.steps
    file.write_text('{"01_data_audit.ipynb": {"ke')
    assert run.main([str(tiny_params_file)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert str(file) in error[0] and ("delete" in error[0]) and len(error) == 2
    assert "The previous report and artefacts are unchanged." == error[1]


def test_state_files_are_written_whole(tmp_path, monkeypatch):
    file = tmp_path / "steps.json"
    store.write_json(file, {"a": 1})

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        store.write_json(file, {"a": 2, "b": "a longer record"})
    assert json.loads(file.read_text()) == {"a": 1}, "the old content, whole"
    assert [p.name for p in tmp_path.iterdir()] == ["steps.json"], "no temporary file left"


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.ENOSPC, "the disk is full"),
                                         (errno.EACCES, "cannot be written")])
def test_a_reports_folder_that_cannot_be_written_ends_in_one_clear_line(tiny_params_file, stand_ins, monkeypatch,
                                                                         capsys, code, words):
    run.run_study(tiny_params_file)
    before = published(tiny_params_file).root.resolve()

    def refused(path, value):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(store, "write_json", refused)
    assert run.main([str(tiny_params_file)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("error: ") and words in error[0] and "Traceback" not in "".join(error)
    assert published(tiny_params_file).root.resolve() == before


def test_without_hard_links_the_interim_caches_are_copied(tmp_path, monkeypatch):
    from lib.core.paths import copy_run

    source = tmp_path / "run"
    (source / "interim").mkdir(parents=True)
    (source / "interim" / "pixels.npy").write_bytes(b"pixels")
    (source / "interim" / ".pixels.lock").write_text("")
    (source / "export").mkdir()

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    copy_run(source, tmp_path / "copy")
    assert (tmp_path / "copy" / "interim" / "pixels.npy").read_bytes() == b"pixels"
    assert not (tmp_path / "copy" / "interim" / ".pixels.lock").exists(), "a lock belongs to its own folder"
    assert not (tmp_path / "copy" / "export").exists(), "exported models belong to the models they came from"


def test_a_run_name_that_is_a_file_of_reports_is_refused(tiny_params, tmp_path):
    with pytest.raises(ParamsError, match="run_name.*'report.html' is the name of a file the study writes"):
        load_params(write_params(tmp_path / "bad.yaml", tiny_params | {"run_name": "report.html"}))


# ---------------------------------------------------------------------------------------------
# Keys: a notebook saved in Jupyter reruns nothing
# ---------------------------------------------------------------------------------------------


def test_after_a_notebook_is_saved_in_jupyter_a_run_reuses_every_step(tiny_params_file, stand_ins, tmp_path,
                                                                       monkeypatch):
    import shutil

    from helpers import save_as_jupyter_does

    from lib.core.paths import NOTEBOOKS_DIR
    from lib.pipeline import keys

    copy = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, copy)
    monkeypatch.setattr(keys, "NOTEBOOKS_DIR", copy)
    run.run_study(tiny_params_file)
    for notebook in copy.glob("*.ipynb"):
        save_as_jupyter_does(notebook)
    stand_ins.executed.clear()
    run.run_study(tiny_params_file)
    assert stand_ins.executed == ["05_report.ipynb"]


# ---------------------------------------------------------------------------------------------
# Notebooks by hand: never a stale or ignored input
# ---------------------------------------------------------------------------------------------


SPLIT_OVERRIDE = {"split.train": 0.5, "split.val": 0.25, "split.test": 0.25}


def test_by_hand_an_override_of_the_split_stops_the_model_notebook_naming_the_audit(tiny_params_file, stand_ins):
    run.run_study(tiny_params_file)
    with pytest.raises(interactive.EarlierStepNeeded, match="run 01_data_audit.ipynb by hand first"):
        interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides=SPLIT_OVERRIDE)
    scratch = interactive.scratch_paths(load_params(tiny_params_file, SPLIT_OVERRIDE))
    assert not scratch.root.exists(), "nothing computed on the published split"
    # the audit by hand, with the same overrides, computes the split into the scratch run; then the CNN can run
    audit = interactive.open_notebook("01_data_audit.ipynb", tiny_params_file, overrides=SPLIT_OVERRIDE)
    assert not audit.reuses and audit.paths == scratch
    for round_name in ("seed-42", "seed-43", "seed-44"):  # what the audit writes: each round's split, redrawn
        scratch.round(round_name).split_manifest.parent.mkdir(parents=True, exist_ok=True)
        scratch.round(round_name).split_manifest.write_text("path,label,split\n")
    audit.finished()
    cnn = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides=SPLIT_OVERRIDE)
    assert not cnn.reuses and cnn.paths == scratch


def test_a_notebook_computing_by_hand_holds_its_scratch_run(tiny_params_file, stand_ins):
    run.run_study(tiny_params_file)
    first = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    with pytest.raises(store.LockHeld, match="is being written by process"):
        interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    lines = interactive.remove_scratch_runs(load_params(tiny_params_file).reports_dir)
    assert first.paths.root.is_dir() and lines[0].startswith("kept")
    first.finished()
    again = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    assert again.reuses and again.paths == first.paths, "recorded: shown, not computed again"
    assert interactive.remove_scratch_runs(load_params(tiny_params_file).reports_dir)[0].startswith("removed")
    assert not first.paths.root.exists()


def test_a_step_interrupted_by_hand_is_never_shown_as_reused(tiny_params_file, stand_ins):
    """The scratch run starts as a copy of the published run, whose steps.json records this step: a computation
    interrupted by hand (no `finished`) must not leave that record standing over a half-written model folder."""
    from lib.pipeline import keys

    run.run_study(tiny_params_file)
    real = keys.step_key
    with pytest.MonkeyPatch.context() as edited:
        edited.setattr(keys, "step_key", lambda planned, *args: real(planned, *args) + (  # as after a CNN-only edit
            "-edited" if planned.step.notebook == "02_cnn.ipynb" else ""))
        interrupted = interactive.open_notebook("02_cnn.ipynb", tiny_params_file)
        assert not interrupted.reuses
        interrupted.lock.close()  # the kernel was stopped before its last cell
    # the edit undone: the published key again, but the scratch run's folder is half new
    again = interactive.open_notebook("02_cnn.ipynb", tiny_params_file)
    assert not again.reuses


def test_a_scratch_run_made_from_an_older_published_run_is_made_again(tiny_params_file, stand_ins, tmp_path):
    run.run_study(tiny_params_file)
    notebook = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    notebook.finished()
    assert interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3}).reuses
    # the data change and the run is published again: the scratch run's earlier steps are stale
    folder = Path(load_params(tiny_params_file).data.directory)
    image = sorted((folder / "alpha").iterdir())[0]
    Image.fromarray(np.full((40, 48, 3), 9, np.uint8)).save(image)
    run.run_study(tiny_params_file)
    after = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    assert not after.reuses and "scratch.json" in {p.name for p in after.paths.root.iterdir()}
    record = json.loads((after.paths.root / "scratch.json").read_text())
    assert record["copied_from"] == str(published(tiny_params_file).root.resolve())


def test_a_lib_change_while_a_notebook_is_open_is_said_and_not_recorded(tiny_params_file, stand_ins, monkeypatch,
                                                                         capsys):
    from lib.pipeline import keys

    run.run_study(tiny_params_file)
    notebook = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": 0.3})
    real = keys.step_key
    monkeypatch.setattr(keys, "step_key", lambda *args: real(*args) + "-after-an-edit")
    notebook.finished()
    assert "not recorded: this step's inputs changed since the notebook opened" in capsys.readouterr().out
    assert "rounds/seed-42/02_cnn.ipynb" not in json.loads(notebook.paths.steps.read_text())


def test_old_scratch_runs_are_pruned(tiny_params_file, stand_ins):
    run.run_study(tiny_params_file)
    kept = load_params(tiny_params_file).scratch_runs_kept
    folders = []
    for dropout in (0.1, 0.2, 0.3, 0.35, 0.4, 0.45)[: kept + 2]:  # the default (0.5) would show the published run
        notebook = interactive.open_notebook("02_cnn.ipynb", tiny_params_file, overrides={"cnn.dropout": dropout})
        notebook.finished()
        folders.append(notebook.paths.root)
        used = time.time() - 1000 + len(folders)  # in the order they were used, whatever the clock's resolution
        os.utime(notebook.paths.root, (used, used))
    assert [f.exists() for f in folders] == [False] * 2 + [True] * kept, [(f.name, f.exists()) for f in folders]


# ---------------------------------------------------------------------------------------------
# Shared caches: one process builds, the others wait
# ---------------------------------------------------------------------------------------------


def test_two_processes_on_a_cold_pixel_cache_build_it_once(tmp_path):
    folder = make_class_folders(tmp_path / "images", {"alpha": 20, "beta": 20})
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    (tmp_path / "paths.json").write_text(json.dumps(paths))
    build = f"""
import json, sys, numpy as np
from lib.data import pixels
paths = json.load(open({str(tmp_path / "paths.json")!r}))
array = pixels.cached_pixels(paths, (24, 24), {str(tmp_path / "interim")!r})
np.save(sys.argv[1], np.asarray(array))
"""
    workers = [subprocess.Popen([sys.executable, "-c", build, str(tmp_path / f"out{i}.npy")]) for i in range(2)]
    assert [w.wait(300) for w in workers] == [0, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))
    assert len(list((tmp_path / "interim").glob("pixels-*.npy"))) == 1
    assert not list((tmp_path / "interim").glob("*.partial"))


def test_a_truncated_dataset_archive_in_the_cache_is_downloaded_again(tmp_path, monkeypatch, capsys):
    from lib.data import sources

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv(sources.GROCERY_STORE_ARCHIVE_ENV, raising=False)
    archive = tmp_path / "datasets" / sources.GROCERY_STORE_ARCHIVE_NAME
    archive.parent.mkdir()
    archive.write_bytes(b"PK\x03\x04 a download cut short")
    with pytest.raises(sources.DatasetUnavailableError, match="Could not download the Grocery Store dataset"):
        sources.fetch_grocery_store(url="http://127.0.0.1:9/nothing.zip")
    assert "is not a complete zip archive" in capsys.readouterr().out
    assert not archive.exists(), "the truncated copy is gone"
