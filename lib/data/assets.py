"""Running offline: seed Keras' cache from a local folder that holds copies of the downloads.

The study downloads two things, both into Keras' cache (``$KERAS_HOME``, default
``~/.keras``): the Grocery Store archive (``datasets/``) and the ImageNet MobileNetV2
weights (``models/``). On a machine without internet, put copies of those files anywhere
in one folder and run ``./run_all.sh --assets FOLDER``: each known file found there is
checked against a ``SHA256SUMS`` file when one sits above it, and copied into the cache
unless the cache has it already. The loading code stays Keras' own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from lib.core import store

from lib.data.sources import GROCERY_STORE_ARCHIVE_NAME, keras_cache_dir

MOBILENET_V2_WEIGHTS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
KNOWN_ASSETS = {GROCERY_STORE_ARCHIVE_NAME: "datasets", MOBILENET_V2_WEIGHTS_NAME: "models"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """`sha256_of` a large file, hashed once: the digest is kept in Keras' cache (``study-checksums/``) with the
    file's size and modification time, and hashed again only when either changes."""
    path = Path(path).resolve()
    stat = path.stat()
    identity = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = keras_cache_dir() / "study-checksums" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:16]}.json"
    try:
        kept = json.loads(record.read_text())
        if {k: kept.get(k) for k in identity} == identity:
            return kept["sha256"]
    except (OSError, ValueError, KeyError):
        pass  # none kept yet, or unreadable: hash again
    digest = sha256_of(path)
    store.write_json(record, identity | {"sha256": digest})
    return digest


def imagenet_weights_sha256() -> str:
    """The sha256 of MobileNetV2's ImageNet weights in Keras' cache, downloaded first when they are not there
    (by `lib.training.models.imagenet_weights_file`, in a child process: this one need not start Keras)."""
    target = keras_cache_dir() / "models" / MOBILENET_V2_WEIGHTS_NAME
    if not target.is_file():
        fetch = "from lib.training.models import imagenet_weights_file; imagenet_weights_file()"
        done = subprocess.run([sys.executable, "-c", fetch], capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr.strip() or f"exit code {done.returncode}").splitlines()
            raise FileNotFoundError(f"MobileNetV2's ImageNet weights are not in {target} and could not be "
                                    f"downloaded: {lines[-1]}")
    return cached_sha256(target)


def _expected_checksums(assets_dir: Path) -> dict[str, str]:
    """``name -> sha256`` from every SHA256SUMS file under the folder (paths are relative to it)."""
    expected = {}
    for sums in assets_dir.rglob("SHA256SUMS"):
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                expected[str((sums.parent / name.lstrip("*")).resolve())] = digest
    return expected


def seed_keras_cache(assets_dir: str | Path, cache_dir: Path | None = None) -> dict[str, Path]:
    """Copy the known downloads found in ``assets_dir`` into Keras' cache; return what is cached."""
    assets_dir = Path(assets_dir).expanduser().resolve()
    if not assets_dir.is_dir():
        raise FileNotFoundError(f"assets folder {assets_dir} does not exist")
    cache_dir = Path(cache_dir) if cache_dir else keras_cache_dir()
    expected = _expected_checksums(assets_dir)
    seeded = {}
    for name, subdir in KNOWN_ASSETS.items():
        found = sorted(assets_dir.rglob(name))
        if not found:
            continue
        source = found[0].resolve()
        target = cache_dir / subdir / name
        if not target.is_file():
            want = expected.get(str(source))
            if want and sha256_of(source) != want:
                raise ValueError(f"{source} does not match its SHA256SUMS entry: a damaged copy?")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(source, partial)
            partial.rename(target)  # atomic: the cache never holds half a file
        seeded[name] = target
    return seeded


if __name__ == "__main__":  # python -m lib.data.assets DIR
    import sys

    for asset_name, cached_path in seed_keras_cache(sys.argv[1]).items():
        print(f"{asset_name} -> {cached_path}")
