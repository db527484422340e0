"""Where images come from: a class-per-folder directory, a split manifest, or the Grocery Store dataset.

Each source returns a *records* table, one row per image file:

    path            absolute path of the file (read-only to us)
    relpath         path relative to the dataset root, for display and manifests
    label           class name
    split           (manifest and official splits only) train / val / test

The dataset folder itself is never written to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from lib.core import store

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")
RECORD_COLUMNS = ["path", "relpath", "label"]


def is_hidden(name: str) -> bool:
    """Dot-files (``.DS_Store``, ``._x.jpg``) and Windows' ``Thumbs.db``/``desktop.ini`` are not data."""
    return name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"}


# --------------------------------------------------------------------------------------
# A class-per-folder directory
# --------------------------------------------------------------------------------------


def _walk_files(folder: Path):
    """Every non-hidden file under ``folder``, in a stable order, following folder links once.

    A link that points back up the tree (a loop) or to a folder already seen is skipped,
    so a walk always ends.
    """
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if not is_hidden(name):
                yield Path(dirpath) / name


def scan_class_folders(root: str | Path) -> pd.DataFrame:
    """List the image files under ``root/<class>/...`` (found recursively).

    Hidden files and folders are ignored. Files whose extension is not an image
    extension, and class folders without any image, are kept in the table with
    ``skip_reason`` set, so that the audit lists them; image candidates have an empty
    ``skip_reason``. Nothing under ``root`` is ever written.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    if not class_dirs:
        raise ValueError(f"dataset folder {root} has no class sub-folders (expected {root}/<class>/<image>)")

    rows = []
    for class_dir in class_dirs:
        found = []
        for path in _walk_files(class_dir):
            ext = path.suffix.lower()
            reason = "" if ext in IMAGE_EXTENSIONS else f"not an image file extension ({ext or 'none'})"
            found.append({"path": str(path), "relpath": path.relative_to(root).as_posix(),
                          "label": class_dir.name, "skip_reason": reason})
        if not any(row["skip_reason"] == "" for row in found):
            found.append({"path": str(class_dir), "relpath": f"{class_dir.name}/", "label": class_dir.name,
                          "skip_reason": "class folder without any image file: the class is left out"})
        rows += found
    return pd.DataFrame(rows, columns=RECORD_COLUMNS + ["skip_reason"])


# --------------------------------------------------------------------------------------
# A user-supplied split manifest
# --------------------------------------------------------------------------------------


def read_split_manifest(csv_path: str | Path) -> pd.DataFrame:
    """Read a CSV with ``path, label, split`` columns and check it before it is used as-is.

    Relative paths are relative to the CSV's own folder. Every problem found is reported
    in one error: missing columns, unknown split names, duplicated or missing files, a
    class without training images.
    """
    csv_path = Path(csv_path).resolve()
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    missing_columns = {"path", "label", "split"} - set(table.columns)
    if missing_columns:
        raise ValueError(f"{csv_path}: missing column(s) {sorted(missing_columns)}; expected path, label, split")
    table = table[["path", "label", "split"]].apply(lambda column: column.str.strip())

    problems = []
    bad_splits = sorted(set(table["split"]) - set(SPLITS))
    if bad_splits:
        problems.append(f"unknown split value(s) {bad_splits}; use {list(SPLITS)}")
    if (table["label"] == "").any():
        rows = (table.index[table["label"] == ""] + 2).tolist()[:5]
        problems.append(f"empty label on line(s) {rows}")
    base = csv_path.parent
    table["relpath"] = table["path"]
    table["path"] = [str((base / p).resolve()) for p in table["path"]]
    duplicated = table.loc[table["path"].duplicated(), "relpath"].tolist()
    if duplicated:
        problems.append(f"{len(duplicated)} path(s) listed twice, e.g. {duplicated[:3]}")
    missing = [rel for rel, p in zip(table["relpath"], table["path"]) if not Path(p).is_file()]
    if missing:
        problems.append(f"{len(missing)} file(s) do not exist, e.g. {missing[:3]}")
    untrained = sorted(set(table["label"]) - set(table.loc[table["split"] == "train", "label"]))
    if untrained:
        problems.append(f"class(es) with no training image: {untrained}")
    if problems:
        raise ValueError(f"{csv_path}: " + "; ".join(problems))
    return table[RECORD_COLUMNS + ["split"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# The Grocery Store dataset (Klasson, Zhang and Kjellström, WACV 2019; MIT licence)
# --------------------------------------------------------------------------------------

GROCERY_STORE_COMMIT = "fc80ba90f803d79d0383df52c5a4ac5de99ff6fc"
GROCERY_STORE_URL = f"https://github.com/marcusklasson/GroceryStoreDataset/archive/{GROCERY_STORE_COMMIT}.zip"
GROCERY_STORE_ARCHIVE_NAME = f"GroceryStoreDataset-{GROCERY_STORE_COMMIT}.zip"
GROCERY_STORE_ARCHIVE_ENV = "GROCERY_STORE_ARCHIVE"
# sha256 over the four label files (classes.csv, train.txt, val.txt, test.txt) of that
# commit. GitHub's archives are not byte-stable over time, their content is: we verify
# what was extracted, not the zip's bytes.
GROCERY_STORE_CONTENT_SHA256 = "a30f42b3e78d1de95e4915673c2bd81bf33fd58ebf76841ba50ca474cdd1e34c"
GROCERY_STORE_IMAGE_COUNT = 5421
_LABEL_FILES = ("classes.csv", "train.txt", "val.txt", "test.txt")
_VERIFIED_MARKER = ".content-verified"


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither cached, nor named by the environment, nor downloadable."""


def keras_cache_dir() -> Path:
    """Keras' cache folder: ``$KERAS_HOME`` or ``~/.keras`` (where Keras itself looks)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def locate_grocery_store_archive(url: str = GROCERY_STORE_URL, cache_dir: Path | None = None) -> Path:
    """The archive's path: named by ``$GROCERY_STORE_ARCHIVE``, in Keras' dataset cache, or downloaded there.

    A download happens at most once: later calls find the cached file.
    """
    named = os.environ.get(GROCERY_STORE_ARCHIVE_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise DatasetUnavailableError(f"{GROCERY_STORE_ARCHIVE_ENV}={named} does not name an existing file")
        return path.resolve()

    cache_dir = Path(cache_dir) if cache_dir else keras_cache_dir()
    cached = cache_dir / "datasets" / GROCERY_STORE_ARCHIVE_NAME
    if cached.is_file():
        return cached

    import keras  # imported here: only a download needs it

    # get_file falls back to /tmp/.keras when the cache folder is missing; make it first.
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Keras' own downloader: progress bar, cache folder, partial files removed on failure.
        return Path(
            keras.utils.get_file(
                fname=GROCERY_STORE_ARCHIVE_NAME, origin=url, cache_dir=str(cache_dir), cache_subdir="datasets"
            )
        )
    except Exception as error:  # noqa: BLE001 - any failure gets the same instructions
        raise DatasetUnavailableError(
            f"Could not download the Grocery Store dataset from {url} ({error}).\n"
            f"To run offline, either put the archive at\n    {cached}\n"
            f"or set {GROCERY_STORE_ARCHIVE_ENV} to the archive's path, e.g.\n"
            f"    export {GROCERY_STORE_ARCHIVE_ENV}=/path/to/{GROCERY_STORE_ARCHIVE_NAME}"
        ) from None


def grocery_store_content_sha256(dataset_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in _LABEL_FILES:
        digest.update((dataset_dir / name).read_bytes())
    return digest.hexdigest()


def verify_grocery_store(dataset_dir: Path, expected_sha256: str | None = GROCERY_STORE_CONTENT_SHA256) -> None:
    """Check the extracted content: the label files match, and every listed image is there."""
    missing_files = [name for name in _LABEL_FILES if not (dataset_dir / name).is_file()]
    if missing_files:
        raise DatasetUnavailableError(f"{dataset_dir} lacks {missing_files}: not the Grocery Store dataset")
    if expected_sha256 and grocery_store_content_sha256(dataset_dir) != expected_sha256:
        raise DatasetUnavailableError(
            f"{dataset_dir}: label files differ from commit {GROCERY_STORE_COMMIT} of the Grocery Store dataset"
        )
    listed = _read_split_lists(dataset_dir)
    absent = [p for p in listed["relpath"] if not (dataset_dir / p).is_file()]
    if absent:
        raise DatasetUnavailableError(f"{dataset_dir}: {len(absent)} listed image(s) are missing, e.g. {absent[:3]}")


def grocery_store_extraction(cache_dir: Path | None = None) -> Path:
    """Where the archive is extracted in Keras' cache; its ``dataset/`` folder is read once the
    extraction carries the marker ``.content-verified``."""
    cache_dir = Path(cache_dir) if cache_dir else keras_cache_dir()
    return cache_dir / "datasets" / f"GroceryStoreDataset-{GROCERY_STORE_COMMIT}"


def extract_grocery_store(
    archive: Path, cache_dir: Path | None = None, expected_sha256: str | None = GROCERY_STORE_CONTENT_SHA256
) -> Path:
    """Extract the archive once into Keras' dataset cache and return its ``dataset/`` folder.

    Extraction goes to a temporary folder that is renamed into place only after the
    content is verified, so an interrupted extraction never leaves a half dataset behind.
    """
    target = grocery_store_extraction(cache_dir)
    dataset_dir = target / "dataset"
    if (target / _VERIFIED_MARKER).is_file():
        return dataset_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extracting-") as tmp:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
        except zipfile.BadZipFile as error:
            raise DatasetUnavailableError(f"{archive} is not a readable zip archive ({error})") from None
        tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "dataset").is_dir():
            raise DatasetUnavailableError(f"{archive} does not have the Grocery Store layout (<top>/dataset/...)")
        verify_grocery_store(tops[0] / "dataset", expected_sha256)
        with open(archive, "rb") as handle:  # the archive it came from: part of the audit's key (lib.pipeline.keys)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        (tops[0] / _VERIFIED_MARKER).write_text(f"{archive}\nsha256 {digest}\n")
        if target.exists():  # a stale, unverified extraction
            shutil.rmtree(target)
        tops[0].rename(target)
    return dataset_dir


def _read_split_lists(dataset_dir: Path) -> pd.DataFrame:
    frames = []
    for split in SPLITS:
        lines = pd.read_csv(
            dataset_dir / f"{split}.txt", header=None, names=["relpath", "fine_id", "coarse_id"], skipinitialspace=True
        )
        frames.append(lines.assign(split=split))
    return pd.concat(frames, ignore_index=True)


def load_grocery_store(dataset_dir: Path, label_level: str = "coarse") -> pd.DataFrame:
    """Records of the 5,421 natural images, with fine and coarse labels and the official split."""
    if label_level not in ("coarse", "fine"):
        raise ValueError(f"label_level must be 'coarse' or 'fine', got {label_level!r}")
    classes = pd.read_csv(dataset_dir / "classes.csv")
    classes.columns = ["fine_label", "fine_id", "coarse_label", "coarse_id", "iconic", "description"]
    fine_names = dict(zip(classes["fine_id"], classes["fine_label"]))
    coarse_names = dict(zip(classes["coarse_id"], classes["coarse_label"]))

    records = _read_split_lists(dataset_dir)
    records["fine_label"] = records["fine_id"].map(fine_names)
    records["coarse_label"] = records["coarse_id"].map(coarse_names)
    records["label"] = records[f"{label_level}_label"]
    records["path"] = [str(dataset_dir / p) for p in records["relpath"]]
    return records[RECORD_COLUMNS + ["split", "fine_label", "coarse_label"]]


def select_classes(
    records: pd.DataFrame, classes: list[str] | None, max_per_class: dict[str, int], seed: int
) -> pd.DataFrame:
    """Keep the named classes (all when None) and sample some down, reproducibly for a seed."""
    available = sorted(records["label"].unique())
    wanted = available if classes is None else list(classes)
    unknown = [c for c in [*wanted, *max_per_class] if c not in available]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}; available: {available}")
    kept = records[records["label"].isin(wanted)].sort_values("relpath", kind="stable")
    parts = []
    for label, group in kept.groupby("label", sort=True):
        limit = max_per_class.get(label)
        parts.append(group if limit is None or limit >= len(group) else group.sample(n=limit, random_state=seed))
    return pd.concat(parts).sort_values(["label", "relpath"], kind="stable").reset_index(drop=True)


def fetch_grocery_store(url: str = GROCERY_STORE_URL, cache_dir: Path | None = None) -> Path:
    """Find or download, then extract and verify: the ``dataset/`` folder, ready to read.

    An extraction verified before is read as it is, archive or not: the archive is only needed to
    extract (a cache may drop it to save space; the GPU kit of tools/device_kit.py carries no archive).
    """
    extracted = grocery_store_extraction(cache_dir)
    if (extracted / _VERIFIED_MARKER).is_file():
        return extracted / "dataset"
    # One process extracts; another that wanted to waits, then finds the extraction done.
    with store.exclusive(extracted.with_name(f".{extracted.name}.lock"), f"the extraction {extracted}", wait=True,
                         on_wait=lambda message: print(message, flush=True)):
        if (extracted / _VERIFIED_MARKER).is_file():
            return extracted / "dataset"
        archive = locate_grocery_store_archive(url, cache_dir)
        if not zipfile.is_zipfile(archive) and not os.environ.get(GROCERY_STORE_ARCHIVE_ENV):
            print(f"{archive} is not a complete zip archive (a download cut short?): it is downloaded again", flush=True)
            archive.unlink()
            archive = locate_grocery_store_archive(url, cache_dir)
        return extract_grocery_store(archive, cache_dir)


# --------------------------------------------------------------------------------------
# One entry point for the notebooks
# --------------------------------------------------------------------------------------


def load_records(data_params) -> pd.DataFrame:
    """The records of the source that a `lib.core.config.DataParams` names."""
    if data_params.source == "folder":
        return scan_class_folders(data_params.directory)
    if data_params.source == "manifest":
        return read_split_manifest(data_params.manifest)
    grocery = data_params.grocery_store
    records = load_grocery_store(fetch_grocery_store(), grocery.label_level)
    # The official split is kept for reference only: the study draws its own split.
    records = records.rename(columns={"split": "official_split"})
    return select_classes(records, grocery.classes, grocery.max_per_class, data_params.sample_seed)
