"""Fixtures: small datasets generated on the fly, and params files pointing at them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Keras' dtype policy is global: a test whose pipeline picked a 16-bit policy ('auto' on a GPU or
    a bfloat16 CPU) must not change the numbers of the tests after it."""
    yield
    import keras

    keras.config.set_dtype_policy("float32")


def write_params(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


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


NO_AUGMENTATION = {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0,
                   "horizontal_flip": False}


def write_first_round_split(params) -> tuple[pd.DataFrame, Path]:
    """What the audit writes for the first round, without near-duplicate grouping: (image table, manifest path)."""
    from lib import audit, rounds, sources, split
    from lib.paths import run_paths

    images = audit.inspect_records(sources.scan_class_folders(params.data.directory), params.audit.max_image_pixels)
    name, kinds = next(iter(rounds.assign_round_splits(images, np.arange(len(images)), params).items()))
    images["split"] = kinds["used"]
    manifest = run_paths(params).round(name).split_manifest
    split.write_split_manifest(images, manifest)
    return images, manifest


@pytest.fixture
def prepare_experiment(tmp_path, tiny_params):
    """``prepare_experiment(model_name, augmentation=True, **sections)``: a split written by the audit's
    lib functions for `image_folder`, and `lib.experiment.prepare` run on it."""
    from lib import experiment
    from lib.config import load_params

    def prepare(model_name: str, augmentation: bool = True, **sections):
        values = tiny_params | sections | ({} if augmentation else {"augmentation": NO_AUGMENTATION})
        params_file = write_params(tmp_path / f"{model_name}.yaml", values)
        write_first_round_split(load_params(params_file))
        return experiment.prepare(str(params_file), model_name)

    return prepare


def cross_split_pairs(pairs: pd.DataFrame, split: pd.Series) -> int:
    """How many pairs (``a``, ``b``: row positions) have their two images in different splits."""
    values = split.to_numpy()
    return int((values[pairs["a"].to_numpy(dtype=int)] != values[pairs["b"].to_numpy(dtype=int)]).sum())


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run (both models of its first round), written once per session: see tests/finished_run.py."""
    from finished_run import make_finished_run

    return make_finished_run(tmp_path_factory.mktemp("finished"))
