"""The GPU kit: what a GPU machine without internet needs to run a study (docs/gpu-kit.md).

    .venv/bin/python tools/device_kit.py build [--params params/default.yaml] [--assets ../shared/assets]
    python3 tools/device_kit.py check [--params params/default.yaml]      # on the GPU machine

``build`` (on a machine with internet to PyPI) fills the folder ``.device/`` (ignored by git, listed in
.gitignore), which travels with the repository to the GPU machine and ``benchmarks/gpu_study.sh`` reads:

    .device/keras/      a Keras cache (``$KERAS_HOME``): the ImageNet MobileNetV2 weights, and a reduced
                        extraction of the Grocery Store dataset: its label files as published (so that
                        `lib.data.sources` selects and samples exactly as from the whole dataset) and only
                        the images the params select, byte for byte (the manifest's sha256 are the same)
    .device/wheels/     wheels (CPython 3.12, manylinux x86-64) of every package the study imports that
                        the GPU machine lacks, with what they need, at requirements.lock's versions
    .device/kit.json    what it holds; .device/SHA256SUMS: the checksum of every file in it

``build`` reads the dataset archive and the MobileNetV2 weights from ``--assets`` and checks them against a
``SHA256SUMS`` file there first; it fails when the kit and the repository's files together pass ``--max-mib``
(default 62). ``check`` (on the GPU machine, before the run) verifies the kit's checksums, that every image the params
select is in it, and warns of what the kit's packages need that the machine lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from packaging.requirements import Requirement  # noqa: E402

from lib.core.config import load_params  # noqa: E402
from lib.data import sources  # noqa: E402
from lib.data.assets import MOBILENET_V2_WEIGHTS_NAME, _expected_checksums, sha256_of  # noqa: E402

KIT = PROJECT_ROOT / ".device"
PYTHON_VERSION = "3.12"  # the GPU machine's (3.12.3)
# Where the GPU machine runs, for the markers of the packages' requirements.
TARGET_ENVIRONMENT = {
    "python_version": PYTHON_VERSION, "python_full_version": "3.12.3", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "",
}
# manylinux tags pip may take: Python 3.12.3 is Ubuntu 24.04's, of glibc 2.39 (pip matches each tag exactly).
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *[f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)]]

# What the study imports that the GPU machine may lack (lib/ and the notebooks; pip follows their needs).
STUDY_ROOTS = ("keras", "papermill", "nbformat", "nbclient", "nbconvert", "ipykernel", "jupyter-client",
               "pydantic", "imagehash")
# Installed on the GPU machine's image (a CUDA image with JAX, PyTorch and the scientific stack):
# the kit carries none of these, whatever version the lock has.
ON_THE_MACHINE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-inspect urllib3 uvloop wadler-lindig werkzeug
wheel wrapt xarray xxhash yarl zipp
""".split())
# Carried although the machine has it: pydantic and others need a recent typing_extensions, and a newer one
# only adds names (it shadows the machine's, being first on PYTHONPATH).
CARRIED_ANYWAY = frozenset({"typing-extensions"})
# Left out on purpose, to keep the kit small: what the lock or a package above names, and the run never uses.
LEFT_OUT = {
    "debugpy": "ipykernel starts without it (it serves debuggers only); 4 MB",
    "jedi": "IPython completes code with it, which papermill never asks for; 5 MB",
    "pywavelets": "imagehash imports it only for whash(); the study's audit uses phash",
    "tensorflow": "the GPU run uses JAX (KERAS_BACKEND=jax)",
    "weasyprint": "the PDF also needs the system's Pango; without them the report step writes the HTML alone",
}


def canonical(name: str) -> str:
    """A distribution's normalised name (PEP 503): ``ImageHash`` and ``jupyter_client`` as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------
# The sources, checked against SHA256SUMS, and the reduced dataset, in the layout lib.data.sources reads
# --------------------------------------------------------------------------------------


def checked_asset(assets_dir: Path, name: str) -> Path:
    """The file ``name`` found under ``assets_dir``, after its sha256 matches its SHA256SUMS entry there."""
    found = sorted(assets_dir.rglob(name))
    if not found:
        raise SystemExit(f"error: {name} is not under {assets_dir}")
    path = found[0].resolve()
    expected = _expected_checksums(assets_dir).get(str(path))
    if expected is None:
        raise SystemExit(f"error: {path} has no entry in a SHA256SUMS file under {assets_dir}")
    if sha256_of(path) != expected:
        raise SystemExit(f"error: {path} does not match its SHA256SUMS entry: a damaged copy?")
    return path


def reduced_grocery_store(archive: Path, data_params, keras_dir: Path) -> list[str]:
    """Extract the label files and the images ``data_params`` selects into a Keras cache; return their paths.

    The extraction is marked verified (as `lib.data.sources.extract_grocery_store` marks a full one) once its
    label files match the dataset's commit; the images come out of the archive with their CRCs checked.
    """
    if data_params.source != "grocery_store":
        raise SystemExit(f"error: the kit carries the Grocery Store dataset; these params read {data_params.source}")
    target = sources.grocery_store_extraction(keras_dir)
    shutil.rmtree(target, ignore_errors=True)
    dataset_dir = target / "dataset"
    prefix = f"GroceryStoreDataset-{sources.GROCERY_STORE_COMMIT}/dataset/"
    with zipfile.ZipFile(archive) as zf:
        # The label files are the files directly in dataset/ (classes.csv and the three split lists).
        for member in zf.namelist():
            if member.startswith(prefix) and "/" not in member[len(prefix):] and member != prefix:
                (dataset_dir / member[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
                (dataset_dir / member[len(prefix):]).write_bytes(zf.read(member))
        if sources.grocery_store_content_sha256(dataset_dir) != sources.GROCERY_STORE_CONTENT_SHA256:
            raise SystemExit(f"error: {archive}'s label files differ from commit {sources.GROCERY_STORE_COMMIT}")
        grocery = data_params.grocery_store
        records = sources.select_classes(sources.load_grocery_store(dataset_dir, grocery.label_level),
                                         grocery.classes, grocery.max_per_class, data_params.sample_seed)
        for relpath in records["relpath"]:
            (dataset_dir / relpath).parent.mkdir(parents=True, exist_ok=True)
            (dataset_dir / relpath).write_bytes(zf.read(prefix + relpath))  # zipfile checks each CRC
    (target / sources._VERIFIED_MARKER).write_text(
        f"reduced copy by tools/device_kit.py: label files of commit {sources.GROCERY_STORE_COMMIT} verified, "
        f"{len(records)} of {sources.GROCERY_STORE_IMAGE_COUNT} images (those the params select), from {archive.name}\n"
    )
    return list(records["relpath"])


# --------------------------------------------------------------------------------------
# Wheels: the study's packages the machine lacks, and what they need
# --------------------------------------------------------------------------------------


def locked_versions(lock: Path = PROJECT_ROOT / "requirements.lock") -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", lock.read_text(), flags=re.MULTILINE)
    return {canonical(name): version for name, version in pins}


def wheel_requirements(wheel: Path, extras: set[str]) -> list[Requirement]:
    """What a wheel needs on the GPU machine: its Requires-Dist whose markers hold there, for the ``extras``
    asked of it (``bleach[css]`` needs tinycss2)."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    needed = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            marker = requirement.marker
            if marker is None or any(marker.evaluate(TARGET_ENVIRONMENT | {"extra": e}) for e in ("", *extras)):
                needed.append(requirement)
    return needed


def pip_download(pins: dict[str, str], wheels_dir: Path, platforms: list[str]) -> bool:
    """Let pip (and its cache) fetch the pinned wheels for the GPU machine's Python; False when one has none."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312", "--abi", "abi3",
               "--abi", "none", *[f"--platform={tag}" for tag in platforms], "--dest", str(wheels_dir),
               *[f"{name}=={version}" for name, version in pins.items()]]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode and platforms != ["any"]:
        raise SystemExit(f"error: pip download failed:\n{done.stderr}")
    return done.returncode == 0


def downloaded(pins: dict[str, str], wheels_dir: Path) -> dict[str, Path]:
    """``name -> wheel`` of the pinned versions in the folder (a pure-Python wheel first, where there is one)."""
    found = {}
    for wheel in sorted(wheels_dir.glob("*.whl"), key=lambda w: not w.name.endswith("-none-any.whl")):
        name, version = canonical(wheel.name.split("-")[0]), wheel.name.split("-")[1]
        if pins.get(name) == version:
            found.setdefault(name, wheel)
    return found


def download_wheels(pins: dict[str, str], wheels_dir: Path) -> dict[str, Path]:
    """``name -> wheel`` for each pinned name: a wheel for the GPU machine, pure-Python where the version has
    one (smaller: wcwidth's is 0.3 MB, its compiled one 0.8 MB)."""
    pip_download(pins, wheels_dir, PLATFORMS + ["any"])
    for name, wheel in downloaded(pins, wheels_dir).items():
        if not wheel.name.endswith("-none-any.whl") and pip_download({name: pins[name]}, wheels_dir, ["any"]):
            wheel.unlink()
    found = downloaded(pins, wheels_dir)
    missing = sorted(set(pins) - set(found))
    if missing:
        raise SystemExit(f"error: pip saved no wheel for {missing}")
    return found


def resolve_wheels(wheels_dir: Path) -> dict[str, Path]:
    """Download the study's roots and, level by level, what they need (extras included) that the machine lacks."""
    lock = locked_versions()
    chosen: dict[str, Path] = {}
    extras: dict[str, set[str]] = defaultdict(set)
    wanted = {canonical(name) for name in (*STUDY_ROOTS, *CARRIED_ANYWAY)}
    while True:
        new = sorted(wanted - set(chosen))
        unlocked = [name for name in new if name not in lock]
        if unlocked:
            raise SystemExit(f"error: requirements.lock pins no version of {unlocked}, which the GPU machine lacks")
        if new:
            chosen |= download_wheels({name: lock[name] for name in new}, wheels_dir)
        asked_before = {name: set(asked) for name, asked in extras.items() if asked}
        for name, wheel in list(chosen.items()):
            for requirement in wheel_requirements(wheel, extras[name]):
                need = canonical(requirement.name)
                if need not in ON_THE_MACHINE and need not in LEFT_OUT:
                    wanted.add(need)
                    extras[need] |= requirement.extras
        if wanted <= set(chosen) and asked_before == {name: asked for name, asked in extras.items() if asked}:
            break
    for wheel in wheels_dir.glob("*.whl"):  # one version of each: two stop pip's install
        if wheel not in chosen.values():
            wheel.unlink()
    return dict(sorted(chosen.items()))


# --------------------------------------------------------------------------------------
# build and check
# --------------------------------------------------------------------------------------


def traveling_repository_bytes() -> int:
    """What the repository adds to the copy: its tracked and its untracked, not ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    return sum((PROJECT_ROOT / p).stat().st_size for p in listed.split("\0") if p and (PROJECT_ROOT / p).is_file())


def kit_files(kit: Path) -> list[Path]:
    return sorted(p for p in kit.rglob("*") if p.is_file() and p.name not in ("kit.json", "SHA256SUMS"))


def build(args) -> None:
    params = load_params(args.params)
    assets = Path(args.assets).expanduser().resolve()
    kit = Path(args.kit).resolve()
    archive = checked_asset(assets, sources.GROCERY_STORE_ARCHIVE_NAME)
    weights = checked_asset(assets, MOBILENET_V2_WEIGHTS_NAME)
    print(f"sources match {assets}/SHA256SUMS: {archive.name}, {weights.name}")

    keras_dir = kit / "keras"
    images = reduced_grocery_store(archive, params.data, keras_dir)
    (keras_dir / "models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, keras_dir / "models" / MOBILENET_V2_WEIGHTS_NAME)
    print(f"dataset: {len(images)} images of {args.params} and the label files; weights: {weights.name}")

    wheels_dir = kit / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheels = resolve_wheels(wheels_dir)
    print(f"wheels ({len(wheels)}, for the packages the GPU machine lacks): " + ", ".join(
        f"{w.name.split('-')[0]} {w.name.split('-')[1]}" for w in wheels.values()))
    print("left out: " + "; ".join(f"{name}: {why}" for name, why in LEFT_OUT.items()))

    files = kit_files(kit)
    (kit / "SHA256SUMS").write_text("".join(f"{sha256_of(p)}  {p.relative_to(kit)}\n" for p in files))
    sizes = {part: sum(p.stat().st_size for p in files if p.relative_to(kit).parts[0] == part)
             for part in ("keras", "wheels")}
    (kit / "kit.json").write_text(json.dumps({
        "params": str(args.params), "images": len(images), "archive": archive.name, "weights": weights.name,
        "wheels": [w.name for w in wheels.values()], "left_out": LEFT_OUT,
        "bytes": sizes, "made_by": "tools/device_kit.py build",
    }, indent=2) + "\n")
    repository = traveling_repository_bytes()
    total = repository + sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    mib = 2**20
    print(f"size: dataset {sizes['keras'] / mib:.1f} MiB (weights included), wheels {sizes['wheels'] / mib:.1f} MiB, "
          f"repository {repository / mib:.1f} MiB: {total / mib:.1f} MiB to copy (--max-mib {args.max_mib})")
    if total > args.max_mib * mib:
        raise SystemExit(f"error: {total / mib:.1f} MiB is over --max-mib {args.max_mib}: a smaller --params, or a larger --max-mib")
    print(f"kit ready: {kit}; copy the repository with it to the GPU machine and run bash benchmarks/gpu_study.sh")


def unmet_requirements(wheels_dir: Path) -> list[str]:
    """What the kit's packages need (their extras aside) that this interpreter lacks, or has at another version."""
    from importlib import metadata

    problems = []
    for wheel in sorted(wheels_dir.glob("*.whl")):
        name = wheel.name.split("-")[0]
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if (requirement.marker and not requirement.marker.evaluate({"extra": ""})) \
                    or canonical(requirement.name) in LEFT_OUT:
                continue
            try:
                version = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {requirement}, which is not installed")
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{name} needs {requirement}; {version} is installed")
    return problems


def check(args) -> None:
    """On the GPU machine: the kit arrived whole, and it holds every image the params select."""
    kit = Path(args.kit).resolve()
    sums = kit / "SHA256SUMS"
    if not sums.is_file():
        raise SystemExit(f"error: no kit at {kit}: run tools/device_kit.py build with internet and copy .device here")
    damaged = [name for digest, name in (line.split(maxsplit=1) for line in sums.read_text().splitlines())
               if not (kit / name).is_file() or sha256_of(kit / name) != digest]
    if damaged:
        raise SystemExit(f"error: {len(damaged)} kit file(s) missing or changed, e.g. {damaged[:3]}")
    os.environ["KERAS_HOME"] = str(kit / "keras")  # the kit, whatever this process was given
    params = load_params(args.params)
    records = sources.load_records(params.data)  # as the study reads them
    absent = records.loc[[not Path(p).is_file() for p in records["path"]], "relpath"].tolist()
    if absent:
        raise SystemExit(f"error: {len(absent)} image(s) {args.params} selects are not in the kit, e.g. {absent[:3]}: "
                         f"build it for these params")
    for problem in unmet_requirements(kit / "wheels"):
        print(f"warning: {problem}")
    print(f"kit whole ({len(sums.read_text().splitlines())} files); {len(records)} images of {args.params} in it")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "check"))
    parser.add_argument("--params", default="params/default.yaml", help="the study's params file (its data section)")
    parser.add_argument("--assets", default=str(PROJECT_ROOT.parent / "shared" / "assets"),
                        help="the downloads and their SHA256SUMS (build)")
    parser.add_argument("--kit", default=str(KIT), help="the kit's folder (default .device)")
    parser.add_argument("--max-mib", type=float, default=62.0, help="the largest size of the repository and the kit together, in MiB (build)")
    args = parser.parse_args(argv)
    build(args) if args.action == "build" else check(args)


if __name__ == "__main__":
    main()
