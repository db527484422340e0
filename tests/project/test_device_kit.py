"""The GPU kit (tools/device_kit.py): its reduced dataset reads as the whole one, and its wheels follow markers."""

import importlib.util
import zipfile
from pathlib import Path

import pytest
from helpers import make_grocery_archive

from lib.core.config import parse_params
from lib.core.paths import PROJECT_ROOT
from lib.data import sources

spec = importlib.util.spec_from_file_location("device_kit", PROJECT_ROOT / "tools" / "device_kit.py")
device_kit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_kit)

APPLES_SAMPLED = {"data": {"source": "grocery_store", "sample_seed": 7, "grocery_store": {
    "label_level": "coarse", "classes": ["Apple", "Juice"], "max_per_class": {"Apple": 5}}}}


def test_the_reduced_dataset_reads_as_the_whole_one_and_holds_only_the_selected_images(tmp_path, monkeypatch):
    archive = make_grocery_archive(tmp_path / "mini.zip")
    data = parse_params(APPLES_SAMPLED).data
    monkeypatch.delenv(sources.GROCERY_STORE_ARCHIVE_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "full"))
    whole = sources.extract_grocery_store(archive, expected_sha256=None)
    expected = sources.load_records(data)
    # The miniature's label files stand in for the real commit's.
    monkeypatch.setattr(sources, "GROCERY_STORE_CONTENT_SHA256", sources.grocery_store_content_sha256(whole))

    kit_cache = tmp_path / "kit" / "keras"
    assert device_kit.reduced_grocery_store(archive, data, kit_cache) == list(expected["relpath"])
    monkeypatch.setenv("KERAS_HOME", str(kit_cache))
    reduced = sources.load_records(data)
    columns = ["relpath", "label"]
    assert reduced[columns].equals(expected[columns])
    assert [Path(p).read_bytes() for p in reduced["path"]] == [Path(p).read_bytes() for p in expected["path"]]
    images = sorted(p.relative_to(sources.fetch_grocery_store()).as_posix()
                    for p in sources.fetch_grocery_store().rglob("*.jpg"))
    assert images == sorted(expected["relpath"]) and len(images) == 5 + 7, "only the selected images travel"


def test_a_dataset_of_other_label_files_is_refused(tmp_path):
    archive = make_grocery_archive(tmp_path / "mini.zip")  # not the real commit's label files
    with pytest.raises(SystemExit, match="label files differ"):
        device_kit.reduced_grocery_store(archive, parse_params(APPLES_SAMPLED).data, tmp_path / "keras")


def test_a_wheels_requirements_follow_the_machines_markers_and_the_extras_asked(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", "\n".join([
            "Metadata-Version: 2.1", "Name: demo", "Version: 1.0",
            "Requires-Dist: always>=1",
            "Requires-Dist: old-python; python_version < '3.10'",
            "Requires-Dist: windows-only; sys_platform == 'win32'",
            "Requires-Dist: tinycss2>=1.1; extra == 'css'",
            "Requires-Dist: Bleach[css]!=5.0.0",
        ]))
    assert [r.name for r in device_kit.wheel_requirements(wheel, set())] == ["always", "Bleach"]
    needed = device_kit.wheel_requirements(wheel, {"css"})
    assert [r.name for r in needed] == ["always", "tinycss2", "Bleach"]
    assert needed[-1].extras == {"css"}
    assert device_kit.canonical("Bleach") == "bleach" and device_kit.canonical("jupyter_client") == "jupyter-client"
