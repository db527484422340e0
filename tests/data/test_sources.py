import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from helpers import GROCERY_ARCHIVE, GROCERY_ARCHIVE_TOP, make_class_folders, make_grocery_archive

from lib.core.config import load_params
from lib.data import sources
from lib.data.sources import DatasetUnavailableError

# --------------------------------------------------------------------------------------
# Class folders
# --------------------------------------------------------------------------------------


def test_scan_finds_images_recursively_and_ignores_hidden_files(image_folder):
    nested = image_folder / "alpha" / "shelf" / "deeper"
    nested.mkdir(parents=True)
    (nested / "extra.PNG").write_bytes((image_folder / "alpha" / "img_000.jpg").read_bytes())
    (image_folder / "alpha" / ".DS_Store").write_bytes(b"\0")
    (image_folder / "beta" / "Thumbs.db").write_bytes(b"\0")
    (image_folder / ".hidden_class").mkdir()
    (image_folder / "gamma" / "notes.txt").write_text("not an image")

    found = sources.scan_class_folders(image_folder)

    assert sorted(found["label"].unique()) == ["alpha", "beta", "gamma"]
    assert "alpha/shelf/deeper/extra.PNG" in set(found["relpath"])
    assert not found["relpath"].str.contains("DS_Store|Thumbs").any()
    skipped = found[found["skip_reason"] != ""]
    assert skipped["relpath"].tolist() == ["gamma/notes.txt"]
    assert skipped["skip_reason"].iloc[0] == "not an image file extension (.txt)"
    assert (found["skip_reason"] == "").sum() == 12 + 10 + 8 + 1


def test_scan_of_a_folder_without_classes_says_what_it_expects(tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        sources.scan_class_folders(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.scan_class_folders(tmp_path / "missing")


# --------------------------------------------------------------------------------------
# Split manifests
# --------------------------------------------------------------------------------------


def _manifest(image_folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    path = image_folder / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(path, index=False)
    return path


def test_manifest_is_used_as_is_with_paths_relative_to_it(image_folder):
    rows = [("alpha/img_000.jpg", "alpha", "train"), ("beta/img_000.jpg", "beta", "train"),
            ("alpha/img_001.jpg", "alpha", "val"), ("beta/img_001.jpg", "beta", "test")]
    table = sources.read_split_manifest(_manifest(image_folder, rows))
    assert table["split"].tolist() == ["train", "train", "val", "test"]
    assert table["path"].iloc[0] == str(image_folder / "alpha" / "img_000.jpg")
    assert table["relpath"].iloc[0] == "alpha/img_000.jpg"


def test_manifest_problems_are_all_listed(image_folder):
    rows = [("alpha/img_000.jpg", "alpha", "train"), ("alpha/img_000.jpg", "alpha", "train"),
            ("beta/img_000.jpg", "beta", "holdout"), ("beta/missing.jpg", "beta", "test")]
    with pytest.raises(ValueError) as raised:
        sources.read_split_manifest(_manifest(image_folder, rows))
    message = str(raised.value)
    assert "unknown split value(s) ['holdout']" in message
    assert "1 path(s) listed twice" in message
    assert "1 file(s) do not exist, e.g. ['beta/missing.jpg']" in message
    assert "class(es) with no training image: ['beta']" in message


def test_manifest_without_the_needed_columns(image_folder):
    path = image_folder / "bad.csv"
    path.write_text("file,class\nalpha/img_000.jpg,alpha\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label', 'path', 'split'\]"):
        sources.read_split_manifest(path)


# --------------------------------------------------------------------------------------
# The Grocery Store dataset, on a small archive in the same layout
# --------------------------------------------------------------------------------------





@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(sources.GROCERY_STORE_ARCHIVE_ENV, raising=False)
    return home


def test_extract_verifies_and_reads_fine_and_coarse_labels(tmp_path, keras_home):
    archive = make_grocery_archive(tmp_path / "mini.zip")
    dataset_dir = sources.extract_grocery_store(archive, expected_sha256=None)
    assert dataset_dir == keras_home / "datasets" / GROCERY_ARCHIVE_TOP / "dataset"

    coarse = sources.load_grocery_store(dataset_dir, "coarse")
    fine = sources.load_grocery_store(dataset_dir, "fine")
    assert coarse["label"].value_counts().to_dict() == {"Apple": 14, "Juice": 7}
    assert fine["label"].nunique() == 3
    assert coarse["split"].value_counts().to_dict() == {"train": 12, "test": 6, "val": 3}
    assert all(Path(p).is_file() for p in coarse["path"])


def test_extraction_happens_once(tmp_path, keras_home, monkeypatch):
    archive = make_grocery_archive(tmp_path / "mini.zip")
    first = sources.extract_grocery_store(archive, expected_sha256=None)

    def no_second_extraction(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_second_extraction)
    assert sources.extract_grocery_store(archive, expected_sha256=None) == first


def test_a_verified_extraction_is_read_without_its_archive(tmp_path, keras_home):
    archive = make_grocery_archive(tmp_path / "mini.zip")
    extracted = sources.extract_grocery_store(archive, expected_sha256=None)
    archive.unlink()  # neither cached nor named nor downloadable: only the extraction is left
    assert sources.fetch_grocery_store(url="http://127.0.0.1:9/unreachable.zip") == extracted


def test_extraction_rejects_incomplete_or_different_content(tmp_path, keras_home):
    incomplete = make_grocery_archive(tmp_path / "incomplete.zip", drop_image=True)
    with pytest.raises(DatasetUnavailableError, match="listed image\\(s\\) are missing"):
        sources.extract_grocery_store(incomplete, expected_sha256=None)
    complete = make_grocery_archive(tmp_path / "complete.zip")
    with pytest.raises(DatasetUnavailableError, match="label files differ from commit"):
        sources.extract_grocery_store(complete)  # the real commit's checksum
    assert not (keras_home / "datasets" / GROCERY_ARCHIVE_TOP).exists(), "a failed extraction must leave nothing behind"


def test_archive_named_by_the_environment_is_used(tmp_path, keras_home, monkeypatch):
    archive = make_grocery_archive(tmp_path / "elsewhere.zip")
    monkeypatch.setenv(sources.GROCERY_STORE_ARCHIVE_ENV, str(archive))
    assert sources.locate_grocery_store_archive() == archive
    monkeypatch.setenv(sources.GROCERY_STORE_ARCHIVE_ENV, str(tmp_path / "typo.zip"))
    with pytest.raises(DatasetUnavailableError, match="does not name an existing file"):
        sources.locate_grocery_store_archive()


def test_archive_in_keras_cache_is_found_without_network(tmp_path, keras_home):
    cached = keras_home / "datasets" / sources.GROCERY_STORE_ARCHIVE_NAME
    cached.parent.mkdir(parents=True)
    make_grocery_archive(cached)
    assert sources.locate_grocery_store_archive(url="http://127.0.0.1:9/unreachable.zip") == cached


def test_offline_without_a_copy_says_where_to_put_the_file(keras_home):
    with pytest.raises(DatasetUnavailableError) as raised:
        sources.locate_grocery_store_archive(url="http://127.0.0.1:9/unreachable.zip")
    message = str(raised.value)
    assert str(keras_home / "datasets" / sources.GROCERY_STORE_ARCHIVE_NAME) in message
    assert sources.GROCERY_STORE_ARCHIVE_ENV in message
    assert not list((keras_home / "datasets").glob("*.zip")), "no partial download may be left behind"


def test_download_goes_through_keras_once_and_is_cached(tmp_path, keras_home):
    served = tmp_path / "served"
    served.mkdir()
    make_grocery_archive(served / "archive.zip")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/archive.zip"
    try:
        first = sources.locate_grocery_store_archive(url=url)
        second = sources.locate_grocery_store_archive(url=url)
    finally:
        server.shutdown()
    assert first == second == keras_home / "datasets" / sources.GROCERY_STORE_ARCHIVE_NAME
    assert len(requests) == 1
    assert zipfile.ZipFile(first).testzip() is None


def test_select_classes_samples_reproducibly(image_folder):
    records = sources.scan_class_folders(image_folder)
    one = sources.select_classes(records, ["alpha", "gamma"], {"alpha": 5}, seed=3)
    two = sources.select_classes(records, ["alpha", "gamma"], {"alpha": 5}, seed=3)
    other = sources.select_classes(records, ["alpha", "gamma"], {"alpha": 5}, seed=4)
    assert one["label"].value_counts().to_dict() == {"alpha": 5, "gamma": 8}
    assert one["relpath"].tolist() == two["relpath"].tolist()
    assert one["relpath"].tolist() != other["relpath"].tolist()
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['delta'\]"):
        sources.select_classes(records, ["alpha", "delta"], {}, seed=0)


# --------------------------------------------------------------------------------------
# The real archive from ../shared (present on developer machines and in CI)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not GROCERY_ARCHIVE.is_file(), reason=f"{GROCERY_ARCHIVE} is not on this machine")
def test_real_grocery_store_default_subset(keras_home, monkeypatch):
    from lib.data.split import stratified_split

    monkeypatch.setenv(sources.GROCERY_STORE_ARCHIVE_ENV, str(GROCERY_ARCHIVE))
    params = load_params("params/default.yaml")
    records = sources.load_records(params.data)

    assert records["label"].value_counts().to_dict() == {
        "Apple": 576, "Juice": 495, "Yoghurt": 373, "Milk": 372, "Oat-Milk": 14,
    }
    dataset_dir = keras_home / "datasets" / GROCERY_ARCHIVE_TOP / "dataset"
    assert len(sources.load_grocery_store(dataset_dir)) == sources.GROCERY_STORE_IMAGE_COUNT

    split = stratified_split(records["label"], (params.split.train, params.split.val, params.split.test), 42)
    assert split.value_counts().to_dict() == {"train": 1280, "val": 275, "test": 275}
    per_class = pd.crosstab(records["label"], split)
    shares = per_class.div(per_class.sum(axis=1), axis=0)
    assert (per_class > 0).all().all(), "every class, Oat-Milk included, is in every split"
    big = shares.drop(index="Oat-Milk")
    assert ((big["train"] - 0.70).abs() < 0.01).all() and ((big["test"] - 0.15).abs() < 0.01).all()


def test_awkward_folders_and_files(tmp_path):
    root = make_class_folders(tmp_path / "data", {"caf\u00e9 cr\u00e8me": 3, "<b>x<b> & y": 3, "plain": 3})
    (root / "empty class").mkdir()
    (root / "plain" / "README").write_text("no extension")
    (root / "plain" / "loop").symlink_to(root / "plain")  # a folder link pointing back up: a loop
    (root / "plain" / "self.jpg").symlink_to(root / "plain" / "self.jpg")  # a file link loop
    linked = tmp_path / "elsewhere"
    make_class_folders(linked, {"more": 2})
    (root / "plain" / "shelf").symlink_to(linked / "more")  # a linked sub-folder is followed

    found = sources.scan_class_folders(root).set_index("relpath")

    assert set(found["label"]) == {"caf\u00e9 cr\u00e8me", "<b>x<b> & y", "plain", "empty class"}
    assert found.loc["empty class/", "skip_reason"] == "class folder without any image file: the class is left out"
    assert found.loc["plain/README", "skip_reason"] == "not an image file extension (none)"
    assert {"plain/shelf/img_000.jpg", "plain/shelf/img_001.jpg"} <= set(found.index)
    assert not any(rel.startswith("plain/loop/") for rel in found.index), "a folder loop is walked once"
    assert found.loc["plain/self.jpg", "skip_reason"] == ""  # listed; the audit finds it unreadable
