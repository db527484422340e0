"""What several test files share: small datasets generated on the fly, params files, the audit's split.

Imported by the tests (``from helpers import ...``) and by conftest.py's fixtures; nothing here is a fixture.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from lib.core.paths import PROJECT_ROOT, run_paths
from lib.data import audit, rounds, sources, split

GROCERY_ARCHIVE_TOP = f"GroceryStoreDataset-{sources.GROCERY_STORE_COMMIT}"  # the archive's top folder

SHARED_ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
GROCERY_ARCHIVE = SHARED_ASSETS / "datasets" / "GroceryStoreDataset-fc80ba90f803d79d0383df52c5a4ac5de99ff6fc.zip"



def random_image(rng: np.random.Generator, size=(48, 40), base_colour=(200, 40, 40)) -> Image.Image:
    """A picture with a class colour and random blocks, so that every image hashes differently."""
    height, width = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = base_colour
    for _ in range(4):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        h, w = rng.integers(4, height // 2), rng.integers(4, width // 2)
        pixels[y : y + h, x : x + w] = rng.integers(0, 256, size=3)
    noise = rng.integers(-20, 21, size=pixels.shape)
    return Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))


CLASS_COLOURS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (160, 40, 160)]


def make_class_folders(root: Path, counts: dict[str, int], seed: int = 0, size=(48, 40)) -> Path:
    """``root/<class>/img_NNN.jpg`` with the given number of images per class."""
    rng = np.random.default_rng(seed)
    for index, (label, count) in enumerate(counts.items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(count):
            image = random_image(rng, size, CLASS_COLOURS[index % len(CLASS_COLOURS)])
            image.save(folder / f"img_{number:03d}.jpg", quality=90)
    return root


def write_params(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


NO_AUGMENTATION = {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0,
                   "horizontal_flip": False}


def write_first_round_split(params) -> tuple[pd.DataFrame, Path]:
    """What the audit writes for the first round, without near-duplicate grouping: (image table, manifest path)."""
    images = audit.inspect_records(sources.scan_class_folders(params.data.directory), params.audit.max_image_pixels)
    name, kinds = next(iter(rounds.assign_round_splits(images, np.arange(len(images)), params).items()))
    images["split"] = kinds["used"]
    manifest = run_paths(params).round(name).split_manifest
    split.write_split_manifest(images, manifest)
    return images, manifest


def cross_split_pairs(pairs: pd.DataFrame, split: pd.Series) -> int:
    """How many pairs (``a``, ``b``: row positions) have their two images in different splits."""
    values = split.to_numpy()
    return int((values[pairs["a"].to_numpy(dtype=int)] != values[pairs["b"].to_numpy(dtype=int)]).sum())


# The tiny study: every notebook and the report on a few generated images (the `tiny_study` fixture)

TINY_TRAINING = {
    "training": {"batch_size": 8, "precision": "float32"},  # exact comparisons below: the same arithmetic on every CPU
    "cnn": {"training": {"epochs": 1}},
    "mobilenet_v2": {"head": {"epochs": 1}, "fine_tune": {"epochs": 1}},
}


# A class name that is also markup: the report must show it as text.
TRICKY = "<i>gamma & co"
TINY_CLASSES = {"alpha": 12, "beta": 10, TRICKY: 8}


def write_tiny_study_params(root: Path, folder: Path, run_name: str, **sections) -> Path:
    """The tiny study's params (32 px, `TINY_TRAINING`) for the images in ``folder``, reports under ``root``."""
    params = {
        "run_name": run_name,
        "reports_dir": str(root / "reports"),
        "data": {"source": "folder", "directory": str(folder), "image_size": [32, 32]},
        "audit": {"samples_per_class": 3},
        **TINY_TRAINING,
        **sections,
    }
    return write_params(root / f"{run_name}.yaml", params)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file (and the names of every folder) under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def copy_of_the_study(tiny_study, tmp_path: Path) -> tuple[Path, dict]:
    """The tiny study's published reports copied to ``tmp_path`` (not a failed run's staging; the link to the
    published version kept as a link), and its params pointing there: runs on the copy leave the module's study as
    it is."""
    params_file, root, _, _ = tiny_study
    reports = tmp_path / "reports"
    shutil.copytree(root.parent, reports, symlinks=True, ignore=shutil.ignore_patterns(".staging-*", ".locks"))
    return reports, yaml.safe_load(params_file.read_text()) | {"reports_dir": str(reports)}


def load_script(relative_path: str):
    """A script of the project that is not a package module (``benchmarks/...``), imported by its path."""
    path = PROJECT_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_as_jupyter_does(notebook_file) -> None:
    """What a save in Jupyter writes into a notebook whose code is unchanged: outputs, execution counts, cell and
    notebook metadata."""
    notebook = nbformat.read(notebook_file, as_version=4)
    for count, cell in enumerate(notebook.cells, start=1):
        cell.metadata["collapsed"] = False
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-07T10:00:00Z"}
        if cell.cell_type == "code":
            cell.execution_count = count
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output {count}\n")]
    notebook.metadata["widgets"] = {"state": {}}
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nbformat.write(notebook, notebook_file)


def make_grocery_archive(path: Path, drop_image: bool = False) -> Path:
    """A miniature archive with the real layout: 2 coarse classes, 3 fine classes."""
    rng = np.random.default_rng(1)
    classes = [("Golden-Delicious", 0, "Apple", 0, "Fruit/Apple/Golden-Delicious"),
               ("Granny-Smith", 1, "Apple", 0, "Fruit/Apple/Granny-Smith"),
               ("Bravo-Apple-Juice", 2, "Juice", 1, "Packages/Juice/Bravo-Apple-Juice")]
    lists = {"train": [], "val": [], "test": []}
    with zipfile.ZipFile(path, "w") as archive:
        header = "Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int)," \
                 "Iconic Image Path (str),Product Description Path (str)\n"
        body = "".join(f"{f},{fi},{c},{ci},/iconic/{f}.jpg,/iconic/{f}.txt\n" for f, fi, c, ci, _ in classes)
        archive.writestr(f"{GROCERY_ARCHIVE_TOP}/dataset/classes.csv", header + body)
        for fine, fine_id, _, coarse_id, folder in classes:
            for split, count in (("train", 4), ("val", 1), ("test", 2)):
                for number in range(count):
                    rel = f"{split}/{folder}/{fine}_{split}{number}.jpg"
                    lists[split].append(f"{rel}, {fine_id}, {coarse_id}")
                    if drop_image and split == "test" and number == 1:
                        continue
                    buffer = __import__("io").BytesIO()
                    random_image(rng).save(buffer, "JPEG")
                    archive.writestr(f"{GROCERY_ARCHIVE_TOP}/dataset/{rel}", buffer.getvalue())
        for split, lines in lists.items():
            archive.writestr(f"{GROCERY_ARCHIVE_TOP}/dataset/{split}.txt", "\n".join(lines) + "\n")
    return path
