"""Decoded pixels: each image decoded once (PIL: upright, RGB, resized), kept on disk, read by split.

`cached_pixels` keeps the decoded array in the run's interim folder, so that later notebooks and
re-runs read it instead of decoding again; `load_study_data` splits it by a round's manifest without
holding the whole decoded dataset in memory (`PixelRows`).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.core import store
from lib.data.images import load_rgb
from lib.data.sources import SPLITS


@dataclass(frozen=True)
class SplitData:
    """One split, decoded: uint8 images (N, H, W, 3; an array, or `PixelRows` read from the pixel cache on
    demand), integer labels (N,), and its manifest rows."""

    images: np.ndarray
    labels: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class StudyData:
    """The three splits and the class names (sorted; a label's index is its position)."""

    class_names: list[str]
    train: SplitData
    val: SplitData
    test: SplitData


def decode_images(paths, image_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode and resize every image once (in parallel, with a progress bar): uint8 (N, H, W, 3), written into
    ``out`` when given (e.g. a memory-mapped file)."""
    def decode(path):
        return np.asarray(load_rgb(path, image_size), dtype=np.uint8)

    paths = list(paths)
    if out is None:
        out = np.empty((len(paths), *image_size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for index, array in enumerate(
            tqdm(pool.map(decode, paths), total=len(paths), desc="Decoding images", unit="img")
        ):
            out[index] = array
    return out


def pixel_cache_key(paths, image_size: tuple[int, int]) -> str:
    """Names the decoded array of these files at this size: their paths in order, sizes and modification times."""
    digest = hashlib.sha256(f"{image_size[0]}x{image_size[1]}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\n{path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_pixels(paths, image_size: tuple[int, int], cache_dir: Path | None, write: bool = True) -> np.ndarray:
    """`decode_images`, read from ``cache_dir`` when these files were decoded at this size before.

    The cache is one ``.npy`` file per (file list, size) key, decoded straight into the file (so
    that the decoded set is never in memory all at once) and put in place atomically; it is
    returned memory-mapped. Older entries in ``cache_dir`` are removed when a new one is
    written. None: no cache. ``write`` False: read the cache when it holds these files, never write
    it (a published run, read by a notebook opened by hand).
    """
    paths = list(paths)
    if cache_dir is None:
        return decode_images(paths, image_size)
    cache_dir = Path(cache_dir)
    file = cache_dir / f"pixels-{image_size[0]}x{image_size[1]}-{pixel_cache_key(paths, image_size)}.npy"
    if file.is_file():
        return np.load(file, mmap_mode="r")
    if not write:
        return decode_images(paths, image_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One process decodes (two steps side by side want the same cache); the other waits, then reads it.
    with store.exclusive(cache_dir / ".pixels.lock", f"the pixel cache {cache_dir}", wait=True):
        if not file.is_file():
            for stale in cache_dir.glob(f"pixels-{image_size[0]}x{image_size[1]}-*.npy"):
                stale.unlink()
            partial = file.with_suffix(".partial")
            pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), *image_size, 3))
            decode_images(paths, image_size, out=pixels)
            pixels.flush()
            del pixels
            os.replace(partial, file)
    return np.load(file, mmap_mode="r")


class PixelRows:
    """Some rows of the pixel cache file, read from disk when indexed: a split's decoded images without holding
    them in this process's memory (the operating system's page cache keeps the file). Indexes like an array
    (an int, a slice or an array of positions) and converts to one (``np.asarray``)."""

    def __init__(self, file: Path, rows: np.ndarray):
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran_order:
            raise ValueError(f"{file}: a Fortran-ordered array cannot be read by rows")
        self.file, self.rows, self.row_shape = Path(file), np.asarray(rows, dtype=np.int64), tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        picked = self.rows[index]
        out = np.empty((np.size(picked), *self.row_shape), dtype=self.dtype)
        with open(self.file, "rb") as handle:
            for position, row in enumerate(np.atleast_1d(picked)):
                handle.seek(self.offset + int(row) * self.row_bytes)
                handle.readinto(out[position])
        return out[0] if np.ndim(picked) == 0 else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return self[:].astype(dtype)


def load_study_data(manifest: pd.DataFrame, image_size: tuple[int, int], cache_dir: Path | None = None,
                    write_cache: bool = True) -> StudyData:
    """The manifest's images, decoded once (or read from ``cache_dir``), split by split.

    The cache holds the files in path order, whatever the manifest's order, so that every
    evaluation round (each its own split of the same images) reads the same cache; each split
    reads its rows from it when a batch needs them (`PixelRows`), so the decoded dataset is
    never held in memory. Without ``cache_dir``, the images are decoded into memory; with ``write_cache``
    False, the cache is read when it holds them and never written (`cached_pixels`).
    """
    class_names = sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(manifest["label"]) - set(class_names))
    if unknown:
        raise ValueError(f"class(es) {unknown} appear in validation/test but not in training")
    paths = manifest["path"].to_numpy(dtype=str)
    in_path_order = np.argsort(paths, kind="stable")
    cache = cached_pixels(paths[in_path_order], image_size, cache_dir, write_cache)
    cache_row = np.empty(len(paths), dtype=np.int64)  # the cache row of each manifest row
    cache_row[in_path_order] = np.arange(len(paths))
    splits = {}
    for split in SPLITS:
        in_split = (manifest["split"] == split).to_numpy()
        rows = manifest[in_split].reset_index(drop=True)
        labels = rows["label"].map(index_of).to_numpy(dtype=np.int64)
        images = (PixelRows(Path(cache.filename), cache_row[in_split]) if isinstance(cache, np.memmap)
                  else cache[cache_row[in_split]])
        splits[split] = SplitData(images, labels, rows)
    return StudyData(class_names, splits["train"], splits["val"], splits["test"])
