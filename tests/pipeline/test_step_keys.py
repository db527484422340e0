"""Which steps a change re-runs: `lib.pipeline.keys.step_key` compared for pairs of runs.

A step's key covers its notebook and code, the params it uses, its round, and the artefacts it
reads; here each round's split manifest is written as the audit writes it (`write_round_splits`),
so that the model steps read what they would read after the audit. A change that alters a model's
outputs re-runs the comparison through those outputs (the end-to-end tests in tests/study/test_study.py show
that); these tests show which steps a change reaches directly.
"""

import dataclasses
import json
import os
import shutil

import nbformat
import numpy as np
import pytest
from helpers import make_class_folders, save_as_jupyter_does, write_params
from PIL import Image

from lib.core.config import load_params
from lib.core.paths import NOTEBOOKS_DIR, run_paths
from lib.data import audit, rounds, sources, split
from lib.pipeline import keys, steps

BASE = {"run_name": "keys", "evaluation": {"seeds": [1, 2]}, "audit": {"samples_per_class": 3},
        "data": {"source": "folder", "image_size": [32, 32]}}


def write_round_splits(params) -> None:
    """Every round's split manifest, as the audit writes it (no near-duplicate grouping here)."""
    images = audit.inspect_records(sources.scan_class_folders(params.data.directory), params.audit.max_image_pixels)
    for name, kinds in rounds.assign_round_splits(images, np.arange(len(images)), params).items():
        split.write_split_manifest(images.assign(split=kinds["used"]), run_paths(params).round(name).split_manifest)


@pytest.fixture
def step_keys(tmp_path):
    """``step_keys(**changes)``: every step's key (by label) for BASE with ``changes`` laid over it, all runs
    sharing one dataset folder and one reports folder."""
    folder = make_class_folders(tmp_path / "images", {"alpha": 12, "beta": 10, "gamma": 8})

    def keys_for(backend: str = "tensorflow", processes: int = 1, inputs: dict | None = None,
                 **changes) -> dict[str, str]:
        """``backend``: what `lib.core.backends.resolve_backend` made of ``training.backend``; ``processes``: how
        many train together (`lib.core.distribution`); ``inputs``: `keys.RunInputs` fields laid over the real ones."""
        values = {**BASE, **changes, "reports_dir": str(tmp_path / "reports")}
        values["data"] = {**BASE["data"], "directory": str(folder), **changes.get("data", {})}
        params = load_params(write_params(tmp_path / "params.yaml", values))
        write_round_splits(params)
        run_inputs = dataclasses.replace(keys.run_inputs(params, backend, processes), **(inputs or {}))
        return {p.label: keys.step_key(p, params, run_paths(params), run_inputs) for p in steps.planned_steps(params)}

    keys_for.folder = folder
    return keys_for


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """The labels whose key differs, or that only one of the two runs has."""
    return {label for label in before.keys() | after.keys() if before.get(label) != after.get(label)}


def test_the_same_params_give_the_same_keys(step_keys):
    assert changed(step_keys(), step_keys()) == set()


def test_a_mobilenet_v2_change_reaches_only_mobilenet_v2_and_the_report(step_keys):
    before = step_keys()
    after = step_keys(mobilenet_v2={"dropout": 0.3})
    assert changed(before, after) == {"rounds/seed-1/03_mobilenetv2.ipynb", "rounds/seed-2/03_mobilenetv2.ipynb",
                                      "05_report.ipynb"}


def test_a_cnn_change_reaches_only_the_cnn_and_the_report(step_keys):
    assert changed(step_keys(), step_keys(cnn={"dense_units": 64})) == {
        "rounds/seed-1/02_cnn.ipynb", "rounds/seed-2/02_cnn.ipynb", "05_report.ipynb"}


def test_a_figure_only_audit_change_reruns_the_audit_and_no_training(step_keys):
    # the audit runs again, rewrites the same split manifests, and no model step sees a change
    assert changed(step_keys(), step_keys(audit={"samples_per_class": 5})) == {"01_data_audit.ipynb",
                                                                               "05_report.ipynb"}


def test_the_imagenet_weights_reach_the_audit_through_its_near_duplicate_features(step_keys):
    assert "01_data_audit.ipynb" in changed(step_keys(), step_keys(mobilenet_v2={"weights": None}))


def test_an_added_seed_trains_only_the_new_round(step_keys):
    before = step_keys()
    after = step_keys(evaluation={"seeds": [1, 2, 3]})
    assert changed(before, after) == {"01_data_audit.ipynb", "rounds/seed-3/02_cnn.ipynb",
                                      "rounds/seed-3/03_mobilenetv2.ipynb", "04_comparison.ipynb", "05_report.ipynb"}


def test_the_statistical_levels_reach_the_comparison_and_the_report_and_the_probe_check(step_keys):
    """``evaluation.alpha`` is read by the comparison alone; ``evaluation.confidence`` also by the MobileNetV2 step,
    whose notebook checks the fine-tuned model against its probe at that level. Neither reaches the audit."""
    before = step_keys()
    assert changed(before, step_keys(evaluation={"seeds": [1, 2], "alpha": 0.01})) == {"04_comparison.ipynb",
                                                                                       "05_report.ipynb"}
    assert changed(before, step_keys(evaluation={"seeds": [1, 2], "confidence": 0.9})) == {
        "rounds/seed-1/03_mobilenetv2.ipynb", "rounds/seed-2/03_mobilenetv2.ipynb", "04_comparison.ipynb",
        "05_report.ipynb"}


def test_another_backend_reruns_every_step_and_auto_is_the_backend_it_resolves_to(step_keys):
    before = step_keys()
    # every step runs Keras: the audit its near-duplicate features, the models, the comparison's Grad-CAM
    assert changed(before, step_keys(backend="jax")) == set(before)
    assert changed(before, step_keys(training={"backend": "tensorflow"})) == set()
    assert changed(step_keys(backend="jax"), step_keys(backend="jax", training={"backend": "jax"})) == set()


def test_training_across_processes_reruns_the_model_steps_only(step_keys):
    before = step_keys(backend="jax")
    across = step_keys(backend="jax", processes=2)
    assert changed(before, across) == {label for label in before if label.startswith("rounds/")}
    assert changed(across, step_keys(backend="jax", processes=3)) == changed(before, across)


def test_a_changed_image_reruns_the_audit_and_every_training(step_keys):
    before = step_keys()
    image = step_keys.folder / "beta" / "img_003.jpg"
    Image.new("RGB", (40, 48), (9, 9, 9)).save(image)
    # every split manifest holds the image's new hash, and every step reads one
    assert changed(before, step_keys()) == set(before)


def test_how_batches_are_prepared_or_logged_retrains_nothing(step_keys):
    # any number of worker threads serves the same batches (tests/data/test_inputs.py); verbosity only prints
    assert changed(step_keys(), step_keys(training={"data_workers": 0, "verbose": 0})) == {"05_report.ipynb"}
    assert {"rounds/seed-1/02_cnn.ipynb", "rounds/seed-1/03_mobilenetv2.ipynb"} <= changed(
        step_keys(), step_keys(training={"batch_size": 16}))


def dependencies(notebook: str) -> set[str]:
    """The lib files a notebook depends on, as paths below lib/ ("training/models.py")."""
    return {str(p.relative_to(keys.LIB_DIR)) for p in keys.lib_dependencies(NOTEBOOKS_DIR / notebook)}


def test_each_step_depends_only_on_the_lib_modules_it_imports():
    deps = {step.notebook: dependencies(step.notebook) for step in steps.STEPS}
    assert {"training/models.py", "training/train.py", "training/experiment.py"} <= deps["02_cnn.ipynb"]
    assert not any(f.startswith("report/sections") for f in deps["02_cnn.ipynb"] | deps["03_mobilenetv2.ipynb"]
                   | deps["04_comparison.ipynb"])
    assert "report/sections.py" in deps["05_report.ipynb"]
    # the page style is read by the rendering, which the runner redoes on every run: no notebook's input
    assert "report/report.css" not in set().union(*deps.values())
    assert "training/train.py" not in deps["01_data_audit.ipynb"]
    # near-duplicate features: the audit reaches MobileNetV2 through lib.training.features
    assert {"data/rounds.py", "data/groups.py", "training/features.py", "training/models.py"} <= deps["01_data_audit.ipynb"]
    assert not {"run.py", "pipeline/keys.py"} & set().union(*deps.values())


@pytest.fixture
def lib_copy(tmp_path, monkeypatch):
    """A copy of lib/ that the step keys read instead of the real one, to be edited by a test."""
    copy = tmp_path / "project" / "lib"
    shutil.copytree(keys.LIB_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(keys, "LIB_DIR", copy)
    return copy


def test_a_change_in_a_nested_module_reruns_exactly_the_steps_that_import_it(step_keys, lib_copy):
    """The key follows imports into sub-packages at any depth: the probe check (lib/analysis/probe_check.py) is
    imported by the MobileNetV2 notebook and, through the comparison, by the comparison and report notebooks."""
    before = step_keys()
    probe_check = lib_copy / "analysis" / "probe_check.py"
    probe_check.write_text(probe_check.read_text() + "\nPROBE_CHECK_EDITED = True\n")
    assert changed(before, step_keys()) == {"rounds/seed-1/03_mobilenetv2.ipynb", "rounds/seed-2/03_mobilenetv2.ipynb",
                                            "04_comparison.ipynb", "05_report.ipynb"}


def test_a_report_only_change_reruns_only_the_report(step_keys, lib_copy):
    before = step_keys()
    (lib_copy / "report" / "report.css").write_text("main { margin: 0 }\n")
    assert changed(before, step_keys()) == set()
    sections = lib_copy / "report" / "sections.py"
    sections.write_text(sections.read_text() + "\n# edited\n")
    assert changed(before, step_keys()) == {"05_report.ipynb"}


def test_a_core_change_reruns_every_step(step_keys, lib_copy):
    before = step_keys()
    paths = lib_copy / "core" / "paths.py"
    paths.write_text(paths.read_text() + "\n# edited\n")
    assert changed(before, step_keys()) == set(before)


def test_a_package_map_is_no_input_but_package_code_is(step_keys, lib_copy):
    """A package's __init__.py runs whenever one of its modules is imported: it counts when it holds code;
    its docstring (the package's map) alone does not retrain anything."""
    before = step_keys()
    init = lib_copy / "training" / "__init__.py"
    init.write_text('"""An edited map."""\n')
    assert changed(before, step_keys()) == set()
    init.write_text('"""An edited map."""\n\nDEFAULT_EPOCHS = 3\n')
    assert changed(before, step_keys()) == set(before)  # every notebook reaches lib.training (the audit: its features)


def test_relative_imports_resolve_against_their_package():
    found = keys._imported_modules("from . import minority\nfrom ..data.inputs import Batches\n", "lib.training")
    assert {"lib.training.minority", "lib.data.inputs", "lib.data.inputs.Batches"} <= found


def test_a_model_steps_epoch_times_are_read_from_its_history_per_phase(tmp_path):
    folder = make_class_folders(tmp_path / "images", {"alpha": 3, "beta": 3})
    params = load_params(write_params(tmp_path / "params.yaml", {**BASE, "reports_dir": str(tmp_path / "reports"),
                                                                 "data": {**BASE["data"], "directory": str(folder)}}))
    run = run_paths(params)
    cnn, mobilenet = (planned for planned in steps.planned_steps(params)[1:3])
    assert cnn.epoch_seconds(run) is None, "no history yet"
    history = run.round(cnn.round.name).model("cnn").history
    history.parent.mkdir(parents=True)
    history.write_text("epoch,phase,seconds\n1,training,14.0\n2,training,10.0\n3,training,21.0\n4,training,11.0\n")
    assert cnn.epoch_seconds(run) == {"training": {"epochs": 4, "median": 12.5, "slowest": 21.0}}
    tuned = run.round(mobilenet.round.name).model("mobilenetv2").history
    tuned.parent.mkdir(parents=True)
    tuned.write_text("epoch,phase,seconds\n1,head,2.0\n2,head,1.0\n3,fine-tune,8.0\n")
    assert mobilenet.epoch_seconds(run) == {"head": {"epochs": 2, "median": 1.5, "slowest": 2.0},
                                            "fine-tune": {"epochs": 1, "median": 8.0, "slowest": 8.0}}
    assert steps.planned_steps(params)[0].epoch_seconds(run) is None, "the audit trains nothing"


@pytest.fixture
def notebooks_copy(tmp_path, monkeypatch):
    """A copy of notebooks/ that the step keys read instead of the real one, to be edited by a test."""
    copy = tmp_path / "project" / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, copy)
    monkeypatch.setattr(keys, "NOTEBOOKS_DIR", copy)
    return copy




def test_a_notebook_saved_in_jupyter_keeps_its_keys_and_a_code_edit_reruns_its_steps(step_keys, notebooks_copy):
    before = step_keys()
    save_as_jupyter_does(notebooks_copy / "02_cnn.ipynb")
    assert changed(before, step_keys()) == set()
    notebook = nbformat.read(notebooks_copy / "02_cnn.ipynb", as_version=4)
    code = next(cell for cell in notebook.cells if cell.cell_type == "code" and "summary()" in cell.source)
    code.source += "\nprint('edited')"
    nbformat.write(notebook, notebooks_copy / "02_cnn.ipynb")
    assert changed(before, step_keys()) == {"rounds/seed-1/02_cnn.ipynb", "rounds/seed-2/02_cnn.ipynb"}


def test_the_hardware_and_the_precision_it_resolves_to_reach_every_step(step_keys, monkeypatch):
    from lib.core import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda cpuinfo=None: False)
    before = step_keys()
    assert changed(before, step_keys(inputs={"precision": "mixed_bfloat16"})) == set(before)
    gpu = [{"index": "0", "name": "NVIDIA H100", "compute_capability": 9.0}]
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda environ=None: gpu)
    on_a_gpu = step_keys()
    assert changed(before, on_a_gpu) == set(before)


def test_auto_precision_is_resolved_for_the_key(monkeypatch):
    from lib.core import hardware

    monkeypatch.setattr(hardware, "nvidia_gpus", lambda environ=None: [])
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda cpuinfo=None: True)
    assert hardware.resolved_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda cpuinfo=None: False)
    assert hardware.resolved_precision("auto") == "float32"
    assert hardware.resolved_precision("mixed_float16") == "mixed_float16"


def test_the_imagenet_weights_content_reaches_the_steps_that_use_them(step_keys, tmp_path, monkeypatch):
    from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME

    weights = tmp_path / "keras" / "models" / MOBILENET_V2_WEIGHTS_NAME
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights, first copy")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    before = step_keys()
    weights.write_bytes(b"weights, other copy")  # the same size: the hash, not the size, tells them apart
    os.utime(weights, ns=(1, 1))
    assert changed(before, step_keys()) == {"01_data_audit.ipynb", "rounds/seed-1/03_mobilenetv2.ipynb",
                                            "rounds/seed-2/03_mobilenetv2.ipynb", "05_report.ipynb"}
    kept = json.loads(next((tmp_path / "keras" / "study-checksums").glob("*.json")).read_text())
    assert kept["size"] == len(b"weights, other copy")  # hashed once per content, kept by size and time


def test_an_image_changed_in_a_linked_class_folder_reruns_the_audit_and_every_training(tmp_path, step_keys):
    elsewhere = make_class_folders(tmp_path / "elsewhere", {"delta": 9})
    (step_keys.folder / "delta").symlink_to(elsewhere / "delta", target_is_directory=True)
    before = step_keys()
    image = elsewhere / "delta" / sorted(os.listdir(elsewhere / "delta"))[0]
    Image.fromarray(np.full((40, 48, 3), 7, np.uint8)).save(image)
    assert changed(before, step_keys()) == set(before)


def test_the_grocery_store_extraction_and_its_archive_reach_the_audit(tmp_path, monkeypatch):
    """The Grocery Store source's listing: the extraction in Keras' cache (here a stand-in for one that is
    verified) records the archive it came from; another archive, or another file, is another listing."""
    from lib.data import sources

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    extraction = sources.grocery_store_extraction()
    (extraction / "dataset" / "train").mkdir(parents=True)
    (extraction / "dataset" / "train" / "a.jpg").write_bytes(b"jpeg")
    marker = extraction / ".content-verified"
    marker.write_text("/cache/archive.zip\nsha256 aaaa\n")
    params = load_params(write_params(tmp_path / "p.yaml", {"data": {"source": "grocery_store"}}))
    before = keys.data_source_listing(params)
    marker.write_text("/cache/archive.zip\nsha256 bbbb\n")
    assert keys.data_source_listing(params) != before
    marker.write_text("/cache/archive.zip\nsha256 aaaa\n")
    assert keys.data_source_listing(params) == before
    (extraction / "dataset" / "train" / "a.jpg").write_bytes(b"a longer jpeg")
    assert keys.data_source_listing(params) != before
