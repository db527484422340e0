"""Fixtures: small datasets generated on the fly, and params files pointing at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import (  # noqa: E402
    NO_AUGMENTATION,
    make_class_folders,
    write_first_round_split,
    write_params,
)


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Keras' dtype policy is global: a test whose pipeline picked a 16-bit policy ('auto' on a GPU or
    a bfloat16 CPU) must not change the numbers of the tests after it."""
    yield
    import keras

    keras.config.set_dtype_policy("float32")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of 12, 10 and 8 small JPEGs."""
    return make_class_folders(tmp_path / "images", {"alpha": 12, "beta": 10, "gamma": 8})


@pytest.fixture
def tiny_params(tmp_path: Path, image_folder: Path) -> dict:
    """Parameters for a fast run on `image_folder`, writing under tmp_path/reports."""
    return {
        "run_name": "tiny",
        "reports_dir": str(tmp_path / "reports"),
        "data": {"source": "folder", "directory": str(image_folder), "image_size": [32, 32]},
        "audit": {"samples_per_class": 3},
        "training": {"precision": "float32"},  # tests compare numbers exactly: the same arithmetic on every CPU
    }


@pytest.fixture
def tiny_params_file(tmp_path: Path, tiny_params: dict) -> Path:
    return write_params(tmp_path / "tiny.yaml", tiny_params)


@pytest.fixture
def prepare_experiment(tmp_path, tiny_params):
    """``prepare_experiment(model_name, augmentation=True, **sections)``: a split written by the audit's
    lib functions for `image_folder`, and `lib.training.experiment.prepare` run on it."""
    from lib.core.config import load_params
    from lib.core.paths import run_paths
    from lib.core.step import StepRun
    from lib.training import experiment

    def prepare(model_name: str, augmentation: bool = True, **sections):
        values = tiny_params | sections | ({} if augmentation else {"augmentation": NO_AUGMENTATION})
        params = load_params(write_params(tmp_path / f"{model_name}.yaml", values))
        write_first_round_split(params)
        return experiment.prepare(StepRun(params, run_paths(params)), model_name)

    return prepare


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run (both models of its first round), written once per session: see tests/finished_run.py."""
    from finished_run import make_finished_run

    return make_finished_run(tmp_path_factory.mktemp("finished"))


def _shared_study_folder(config) -> Path:
    """Where this session's tiny study is built: one folder for every pytest worker of the session (a worker's
    temporary folder is under the session's)."""
    base = config._tmp_path_factory.getbasetemp()  # the tmp_path_factory fixture's, before any fixture runs
    return (base.parent if hasattr(config, "workerinput") else base) / "shared-tiny-study"


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: a run of fast tests builds no study
def pytest_collection_modifyitems(session, config, items):
    """The slow tests first, so that the workers share them out while there is still other work to even the load;
    the tests of the shared tiny study last, its build started now, in its own process, to run while the others do."""
    uses_study = {item for item in items if "tiny_study" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: 2 if item in uses_study else 0 if item.get_closest_marker("slow") else 1)
    if uses_study and not config.option.collectonly:
        from shared_study import start

        start(_shared_study_folder(config))


@pytest.fixture(scope="session")
def tiny_study(request):
    """The whole study, every notebook and the report, run once a session on a tiny generated dataset
    (`tests/shared_study.py`): (params file, run folder, steps record, (dataset folder, its digest before)).
    Tests that run again copy it first (`helpers.copy_of_the_study`)."""
    from shared_study import start, wait_for

    folder = _shared_study_folder(request.config)
    start(folder)  # a no-op when collection started it
    return wait_for(folder)
