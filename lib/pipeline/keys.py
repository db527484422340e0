"""Step keys: everything a step's results depend on, hashed (same key, same results: the step is reused)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from lib.core.backends import backend_identity, resolve_backend
from lib.core.hardware import resolved_precision, training_hardware
from lib.core.paths import NOTEBOOKS_DIR, RunPaths
from lib.core.provenance import package_versions
from lib.data.assets import imagenet_weights_sha256
from lib.data.sources import fetch_grocery_store, read_split_manifest, scan_class_folders
from lib.pipeline.steps import PlannedStep


def _digest_paths(paths, digest, relative_to: Path | None = None) -> None:
    """Feed the names (relative to ``relative_to``, else to their folder) and bytes of files, or of every
    file in folders, to ``digest``; a missing file adds its name only."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(relative_to or path.parent)).encode())
            if file.is_file():
                with open(file, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)


def _file_lines(files) -> list[str]:
    """``path, size, modification time`` of each file (following links, as a reader does)."""
    lines = []
    for path in files:
        try:
            stat = os.stat(path)
            lines.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
        except OSError:
            lines.append(f"{path}\tunreadable")
    return lines


def data_source_listing(params) -> str:
    """Cheap identity of the raw data, as the loader reads it: every file the source lists (`lib.data.sources`: a
    class folder's walk, following folder links; a manifest's files), its size and modification time.

    The Grocery Store source: its extraction in Keras' cache (made first when it is not there), which records the
    archive it came from, and every file of it with its size.
    """
    data = params.data
    if data.source == "grocery_store":
        dataset = fetch_grocery_store()
        origin = (dataset.parent / ".content-verified").read_text()
        return "\n".join([f"grocery_store {origin}",
                          *(f"{p.relative_to(dataset)}\t{p.stat().st_size}" for p in sorted(dataset.rglob("*"))
                            if p.is_file())])
    if data.source == "folder":
        return "\n".join(_file_lines(scan_class_folders(data.directory)["path"]))
    return "\n".join(_file_lines([data.manifest, *read_split_manifest(data.manifest)["path"]]))


@dataclass(frozen=True)
class RunInputs:
    """What step keys take from outside the params and the run folder, worked out once per run: the Keras backend
    (the name `lib.core.backends.resolve_backend` gave) and its packages' versions, every study package's version,
    the raw data's listing, the hardware and the precision ``training.precision`` resolves to there
    (`lib.core.hardware`), the ImageNet weights' content (when the params use them), and how many processes train
    together (`lib.core.distribution`)."""

    backend: str
    data_listing: str
    hardware: dict
    precision: str
    weights_sha256: str | None
    processes: int = 1
    packages: dict = field(default_factory=package_versions)


def run_inputs(params, backend: str | None = None, processes: int = 1) -> RunInputs:
    backend = backend or resolve_backend(params.training.backend)
    weights = imagenet_weights_sha256() if params.mobilenet_v2.weights == "imagenet" else None
    return RunInputs(backend, data_source_listing(params), training_hardware(),
                     resolved_precision(params.training.precision), weights, processes)


LIB_DIR = Path(__file__).resolve().parents[1]  # lib/


def _module_file(dotted: str) -> Path | None:
    """The file of a ``lib`` module or package by its dotted name (``lib.data.audit``), or None when it is
    not one (an attribute such as ``lib.data.audit.inspect_records``, or not under ``lib``)."""
    parts = dotted.split(".")
    if parts[0] != "lib":
        return None
    base = LIB_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(file: Path) -> str:
    """``lib/data/audit.py`` -> ``lib.data.audit``; ``lib/data/__init__.py`` -> ``lib.data``."""
    parts = file.relative_to(LIB_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(source: str, package: str = "lib") -> set[str]:
    """Dotted names that Python source imports from ``lib`` (``from lib.data import audit`` gives
    ``lib.data`` and ``lib.data.audit``; relative imports are resolved against ``package``); some may be
    attributes rather than modules, which `_module_file` sorts out."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "lib" or name.startswith("lib.")}


def _runs_code(init: Path) -> bool:
    """Whether a package's ``__init__.py`` holds more than its docstring (the map of the package)."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def _is_runner(file: Path) -> bool:
    """The runner's own code (lib/pipeline, lib/run.py) decides whether and where a step runs, never what it
    computes: a notebook imports it for that (`lib.pipeline.interactive`), and it is no input of a step."""
    return file == LIB_DIR / "run.py" or LIB_DIR / "pipeline" in file.parents


def lib_dependencies(notebook: Path) -> list[Path]:
    """The ``lib`` files a notebook's code uses, directly or through other ``lib`` modules, at any depth.

    Importing ``lib.data.audit`` also runs ``lib/__init__.py`` and ``lib/data/__init__.py``: they count
    when they hold code, not when they hold only their docstring. A data file beside a module
    (``report.css``) counts where that module names it.
    """
    code = "\n".join(
        line for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"
        for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    pending, seen = _imported_modules(code), set()
    while pending:
        file = _module_file(pending.pop())
        if file is None or file in seen:
            continue
        seen.add(file)
        if _is_runner(file):
            continue
        name = _module_name(file)
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        pending |= _imported_modules(file.read_text(), package)
        pending |= {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}  # its packages
    files = {f for f in seen if not _is_runner(f) and (f.name != "__init__.py" or _runs_code(f))}
    for module in list(files):  # the data files a module reads by name, beside it
        text = module.read_text()
        files |= {f for f in module.parent.iterdir() if f.suffix not in (".py", ".pyc") and f.name in text}
    return sorted(files)


def used_params(params, uses: tuple[str, ...]) -> dict:
    """The values of the dotted params names ``uses`` (``"*"``: every value that shapes the results)."""
    values = params.study_values()
    if uses == ("*",):
        return values
    picked = {}
    for name in uses:
        value = values
        for part in name.split("."):
            value = value[part]
        picked[name] = value
    return picked


def with_backend(params, backend: str):
    """``params`` with ``training.backend`` replaced by the backend it resolved to (``auto`` and the
    name it resolves to are the same inputs)."""
    return params.model_copy(update={"training": params.training.model_copy(update={"backend": backend})})


def _uses(step, name: str) -> bool:
    """Whether the step reads the param ``name`` (a dotted name): itself, a section holding it, or everything."""
    return any(use == "*" or name == use or name.startswith(f"{use}.") for use in step.uses)


def notebook_code(notebook: Path) -> str:
    """The code papermill runs of a notebook: its code cells' sources in order. Outputs, execution counts and
    metadata, which Jupyter writes into the file on every save, are no input."""
    cells = nbformat.read(notebook, as_version=4).cells
    return "\n# --- next cell ---\n".join(cell.source for cell in cells if cell.cell_type == "code")


def step_key(planned: PlannedStep, params, run: RunPaths, inputs: RunInputs) -> str:
    """Everything a step's results depend on, hashed: same key, same results, so the step can be reused.

    Its notebook's code and the ``lib`` code it imports, the package versions, the Keras backend and its
    version, the hardware and the resolved precision, the params it uses, the round it runs for (and which round is
    first), the artefacts it reads, for the audit the raw data's listing, and for the steps that use MobileNetV2's
    ImageNet weights their content (`RunInputs`). Every step runs Keras (the audit its near-duplicate features,
    the comparison Grad-CAM), so the backend, hardware and precision are in every key. A model step trained across
    several processes (`lib.core.distribution`) adds their number: the gradients are summed over other devices, so
    the last bits of the numbers differ from one process's.
    """
    step = planned.step
    digest = hashlib.sha256(f"{planned.round}|first round {planned.rounds.first}".encode())
    notebook = NOTEBOOKS_DIR / step.notebook
    digest.update(notebook_code(notebook).encode())
    _digest_paths(lib_dependencies(notebook), digest, relative_to=LIB_DIR)
    digest.update(json.dumps(inputs.packages, sort_keys=True).encode())
    digest.update(json.dumps(backend_identity(inputs.backend), sort_keys=True).encode())
    digest.update(json.dumps({"hardware": inputs.hardware, "precision": inputs.precision}, sort_keys=True).encode())
    digest.update(json.dumps(used_params(with_backend(params, inputs.backend), step.uses), sort_keys=True).encode())
    if inputs.weights_sha256 is not None and _uses(step, "mobilenet_v2.weights"):
        digest.update(f"imagenet weights {inputs.weights_sha256}".encode())
    if step.per_round and inputs.processes > 1:
        digest.update(f"trained across {inputs.processes} processes".encode())
    if step.reads_raw_data:
        digest.update(inputs.data_listing.encode())
    _digest_paths(planned.reads(run), digest, relative_to=run.root)
    return digest.hexdigest()
