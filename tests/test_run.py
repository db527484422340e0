"""The notebooks executed end to end through papermill, as ./run_all.sh runs them."""

import json

import nbformat
import pandas as pd
import pytest

from conftest import make_class_folders, write_params
from lib import run
from lib.paths import NOTEBOOKS_DIR
from lib.split import MANIFEST_COLUMNS


def test_source_notebooks_have_a_parameters_cell_and_no_outputs():
    for step in run.STEPS:
        notebook = nbformat.read(NOTEBOOKS_DIR / step.notebook, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "params_file" in tagged[0].source
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


@pytest.mark.slow
def test_audit_notebook_writes_the_split_manifest(tiny_params_file, tiny_params, tmp_path):
    timings = run.run_study(tiny_params_file)

    root = tmp_path / "reports" / "tiny"
    assert list(timings) == ["01_data_audit.ipynb"]
    executed = nbformat.read(root / "notebooks" / "01_data_audit.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))

    manifest = pd.read_csv(root / "data" / "split.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["label"].value_counts().to_dict() == {"alpha": 12, "beta": 10, "gamma": 8}
    assert set(manifest.groupby("label")["split"].nunique()) == {3}, "every class in every split"
    summary = json.loads((root / "data" / "audit.json").read_text())
    assert summary["classes"] == {"alpha": 12, "beta": 10, "gamma": 8}
    assert summary["imbalance_ratio"] == 1.5
    assert summary["params"]["data"]["image_size"] == [32, 32]


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell(tmp_path, tiny_params):
    folder = make_class_folders(tmp_path / "small", {"plenty": 20, "tiny": 2})
    params_file = write_params(tmp_path / "small.yaml", tiny_params | {"data": {"source": "folder", "directory": str(folder)}})
    with pytest.raises(run.StepFailed) as raised:
        run.run_study(params_file)
    message = str(raised.value)
    assert message.startswith("01_data_audit.ipynb failed in cell ")
    assert "SplitError" in message and "'tiny' has 2" in message
    assert not (tmp_path / "reports" / "tiny" / "data" / "split.csv").exists()


def test_bad_params_stop_the_run_before_any_notebook(tmp_path, capsys):
    params_file = write_params(tmp_path / "bad.yaml", {"reports_dir": str(tmp_path / "r"), "split": {"train": 2}})
    assert run.main([str(params_file)]) == 2
    error = capsys.readouterr().err
    assert "split.train: Input should be less than 1" in error
    assert not (tmp_path / "r").exists()


def test_assets_folder_seeds_the_keras_cache(tmp_path, monkeypatch):
    from lib import assets

    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    folder = tmp_path / "assets" / "keras" / "models"
    folder.mkdir(parents=True)
    weights = folder / assets.MOBILENET_V2_WEIGHTS_NAME
    weights.write_bytes(b"weights")
    sums = tmp_path / "assets" / "SHA256SUMS"
    sums.write_text(f"{assets.sha256_of(weights)}  keras/models/{weights.name}\n")

    seeded = assets.seed_keras_cache(tmp_path / "assets")
    assert seeded == {weights.name: home / "models" / weights.name}
    assert (home / "models" / weights.name).read_bytes() == b"weights"

    (home / "models" / weights.name).unlink()
    weights.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="does not match its SHA256SUMS entry"):
        assets.seed_keras_cache(tmp_path / "assets")
    assert not (home / "models" / weights.name).exists()
