"""Steps side by side (`lib.pipeline.schedule`, ``--jobs N``): which wait for which, each job's share of the machine,
and the runner with stand-ins for the notebooks (tests/study/test_study.py runs the real ones)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from helpers import copy_of_the_study, write_params

from lib import run
from lib.core.config import load_params
from lib.core.paths import RunPaths
from lib.pipeline.schedule import Slot, job_slots, prerequisites

AUDIT, COMPARISON, REPORT = "01_data_audit.ipynb", "04_comparison.ipynb", "05_report.ipynb"


def _model(round_name: str, model: str) -> str:
    notebook = {"cnn": "02_cnn.ipynb", "mobilenetv2": "03_mobilenetv2.ipynb"}[model]
    return f"rounds/{round_name}/{notebook}"


def test_a_model_step_waits_for_the_audit_and_a_later_round_for_its_models_first_round(tiny_params_file):
    params = load_params(tiny_params_file)  # rounds seed-42 (first), seed-43, seed-44
    plan = run.planned_steps(params)
    waits = prerequisites(plan, RunPaths(Path("/nowhere")))
    assert waits[AUDIT] == set()
    for model in ("cnn", "mobilenetv2"):
        assert waits[_model("seed-42", model)] == {AUDIT}
        for later in ("seed-43", "seed-44"):
            assert waits[_model(later, model)] == {AUDIT, _model("seed-42", model)}
    models = {_model(r, m) for r in ("seed-42", "seed-43", "seed-44") for m in ("cnn", "mobilenetv2")}
    assert waits[COMPARISON] == {AUDIT} | models
    assert waits[REPORT] == {AUDIT, COMPARISON} | models


def test_every_artefact_a_step_reads_is_written_by_a_step_before_it(tiny_params_file):
    """The steps' declarations hold together: what a step reads, an earlier step declares it writes (the audit
    reads the raw images alone); each model of the study has its step, and each step writes something."""
    from lib.core.study import MODELS
    from lib.pipeline.schedule import _overlap

    params = load_params(tiny_params_file)
    plan, folder = run.planned_steps(params), RunPaths(Path("/nowhere"))
    assert [step.model for step in run.STEPS if step.per_round] == list(MODELS)
    assert [step.notebook for step in run.STEPS if step.per_round] == [m.notebook for m in MODELS.values()]
    for index, planned in enumerate(plan):
        written = [path for earlier in plan[:index] for path in earlier.writes(folder)]
        unwritten = [read for read in planned.reads(folder) if not any(_overlap(read, w) for w in written)]
        assert not unwritten, f"{planned.label} reads what no earlier step writes: {unwritten}"
        assert planned.writes(folder) or planned.step.always, f"{planned.label} declares nothing it writes"


def test_jobs_get_their_own_cores_and_gpus_and_share_what_there_is_too_little_of():
    assert job_slots(1, cores=(0, 1)) == [Slot((0, 1), machine_cores=2)]
    assert job_slots(2, cores=(0, 1)) == [Slot((0,), machine_cores=2), Slot((1,), machine_cores=2)]
    assert job_slots(3, cores=(0, 1)) == [Slot((0,), machine_cores=2), Slot((1,), machine_cores=2),
                                          Slot((0,), machine_cores=2)]
    assert [s.describe() for s in job_slots(2, cores=tuple(range(8)))] == ["cores 0-3", "cores 4-7"]
    four_gpus = job_slots(2, cores=tuple(range(8)), gpus=("0", "1", "2", "3"))
    assert [s.gpus for s in four_gpus] == [("0", "1"), ("2", "3")]
    assert four_gpus[1].environment() == {"CUDA_VISIBLE_DEVICES": "2,3", "TF_NUM_INTRAOP_THREADS": "8"}
    assert four_gpus[1].describe() == "GPU 2,3, cores 4-7"
    one_gpu = job_slots(3, cores=tuple(range(6)), gpus=("0",))
    assert [s.gpus for s in one_gpu] == [("0",)] * 3
    assert one_gpu[0].environment() == {"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.30",
                                        "TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_NUM_INTRAOP_THREADS": "6"}
    assert one_gpu[2].describe() == "GPU 0 (shared by 3 jobs), cores 4-5"
    assert job_slots(2, cores=(0, 1))[1].environment() == {"TF_NUM_INTRAOP_THREADS": "2"}, "one job's arithmetic"
    with pytest.raises(ValueError, match="--jobs must be 1 or more, got 0"):
        job_slots(0)


def _stand_in_rendering(monkeypatch) -> None:
    from lib.report import render as report_render

    def render(notebook, html, pdf, title):
        html.write_text("<html></html>")
        pdf.write_bytes(b"%PDF-1.7")
        return 1

    monkeypatch.setattr(report_render, "render", render)


def _stand_in_jobs(monkeypatch, tmp_path, scenario: str) -> None:
    """Each job runs `stand_in_jobs` (tests/stand_in_jobs.py) in place of its notebook."""
    from lib.pipeline import schedule

    monkeypatch.setattr(schedule, "JOB_MODULE", "stand_in_jobs")
    tests = Path(__file__).parents[1]  # where stand_in_jobs.py is
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("STAND_IN_DIR", str(tmp_path))
    monkeypatch.setenv("STAND_IN", scenario)


@pytest.mark.slow
def test_two_jobs_run_ready_steps_side_by_side_each_on_its_own_cores(tiny_params_file, tmp_path, monkeypatch):
    """Stand-ins for the notebooks (`stand_in_jobs`): the first round's two model steps each wait, bounded, until
    the other has started, which they can only do side by side."""
    meeting = {_model("seed-42", "cnn"): "cnn", _model("seed-42", "mobilenetv2"): "mobilenetv2"}
    _stand_in_jobs(monkeypatch, tmp_path, "meet")
    _stand_in_rendering(monkeypatch)
    record = run.run_study(tiny_params_file, jobs=2)
    plan = run.planned_steps(load_params(tiny_params_file))
    assert list(record)[:-1] == [planned.label for planned in plan], "steps.json lists the steps in the plan's order"
    waits = prerequisites(plan, RunPaths(Path("/nowhere")))
    for label, waited in waits.items():
        for before in waited:
            assert record[label]["started_s"] >= record[before]["finished_s"], f"{label} started before {before} ended"
    cnn, mobilenet = record[_model("seed-42", "cnn")], record[_model("seed-42", "mobilenetv2")]
    assert cnn["started_s"] < mobilenet["finished_s"] and mobilenet["started_s"] < cnn["finished_s"], "overlapped"
    slots = {slot.describe() for slot in job_slots(2)}
    assert {entry["where"] for entry in record.values() if "where" in entry} <= slots
    cores = {label: json.loads((tmp_path / f"cores-{label.replace('/', '-')}").read_text()) for label in meeting}
    assert not set(cores[_model("seed-42", "cnn")]) & set(cores[_model("seed-42", "mobilenetv2")]) or \
        len(slots) == 1, "side by side, each on its own cores"
    published = json.loads((RunPaths(Path(load_params(tiny_params_file).reports_dir) / "tiny")).steps.read_text())
    assert published == record


@pytest.mark.slow
def test_a_step_failing_beside_another_ends_the_run_after_it_and_the_next_run_reuses_that_one(
        tiny_params_file, tmp_path, monkeypatch):
    from lib.pipeline.execute import StepFailed

    failing, beside = _model("seed-42", "mobilenetv2"), _model("seed-42", "cnn")
    _stand_in_jobs(monkeypatch, tmp_path, "fail-beside")
    _stand_in_rendering(monkeypatch)
    with pytest.raises(StepFailed, match="a stand-in's failure"):
        run.run_study(tiny_params_file, jobs=2)
    params = load_params(tiny_params_file)
    assert not (params.reports_dir / "tiny").exists(), "nothing published"
    progress = json.loads((params.reports_dir / ".staging-tiny" / "progress.json").read_text())
    assert progress[beside]["key"] and progress[failing]["key"] is None


@pytest.mark.slow
def test_two_jobs_give_the_same_predictions_as_one_and_overlap_their_steps(tiny_study, tmp_path):
    """The tiny study (run with one job by the fixture) run again from scratch with two, on a cold pixel cache:
    the first round's two model steps decode the same images at the same time, one of them waiting for the other."""
    import shutil

    params_file, root, _, _ = tiny_study
    reports, values = copy_of_the_study(tiny_study, tmp_path)
    shutil.rmtree((reports / "tiny").resolve() / "interim")
    record = run.run_study(write_params(tmp_path / "two_jobs.yaml", values), force=True, jobs=2)
    assert not any(entry["reused"] for entry in record.values())
    models = [label for label in record if label.startswith("rounds/seed-1/")]
    first, second = (record[label] for label in models)
    assert first["started_s"] < second["finished_s"] and second["started_s"] < first["finished_s"], "overlapped"
    assert first["where"] != second["where"]
    for round_name in ("seed-1", "seed-2"):
        for model in ("cnn", "mobilenetv2"):
            one_job = pd.read_csv(root / "rounds" / round_name / model / "predictions.csv")
            two_jobs = pd.read_csv(reports / "tiny" / "rounds" / round_name / model / "predictions.csv")
            pd.testing.assert_frame_equal(one_job, two_jobs, check_exact=True)
