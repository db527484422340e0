"""Run the whole study: ``python -m lib.run [PARAMS_FILE]`` (what ``./run_all.sh`` calls).

1. The params file is validated before anything runs.
2. The notebooks run in order with papermill (the model notebooks once per evaluation
   round), each with the params file and a staging folder (``reports/.staging-<run_name>``,
   a copy of the previous run) as parameters;
   their executed copies and artefacts go there. A step whose inputs (its notebook, the
   ``lib`` modules it imports, package versions, the params it uses, the raw data's listing and the
   artefacts it reads) are unchanged since the previous run is reused instead
   (``--force`` redoes everything); ``steps.json`` records which.
3. The executed report notebook is rendered to HTML and PDF.
4. Only then is the staging folder moved into place as ``reports/<run_name>``, and its
   report copied to ``reports/report.html`` and ``reports/report.pdf``.

A failure or an interruption at any step leaves the previous report and artefacts as they
were, exits non-zero, and names the notebook and the cell that failed. The next run resumes:
the steps the unfinished run completed (kept in its staging folder) are reused when their
inputs are unchanged.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil

from lib.assets import seed_keras_cache
from lib.backends import backend_identity, environment_variables, kernel_environment, resolve_backend
from lib.config import ParamsError, load_params
from lib.paths import MODELS, NOTEBOOKS_DIR, PROBE_MODEL, RunPaths, run_paths
from lib.provenance import package_versions
from lib.rounds import Round, Rounds, evaluation_rounds
from lib.sources import read_split_manifest

REPORT_STEP = "report (HTML + PDF)"
IOPUB_TIMEOUT_SECONDS = 120


def _model_step_reads(model: str):
    """A model notebook reads its round's split; a later round also reads the method the first round chose."""
    def reads(run: RunPaths, rounds: Rounds, round_: Round) -> list[Path]:
        files = [run.round(round_.name).split_manifest]
        if round_ != rounds.first:
            files.append(run.round(rounds.first.name).model(model).methods)
        return files

    return reads


def _comparison_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The comparison reads every round's test predictions, histories and metrics (and those of the linear
    probe), and in the first round the method tables, the split and the trained models (whose Grad-CAM maps
    it computes)."""
    files = [run.round(rounds.first.name).split_manifest]
    for r in rounds:
        for model in MODELS:
            paths = run.round(r.name).model(model)
            files += [paths.metrics, paths.history, paths.predictions]
            if model == PROBE_MODEL:  # the linear probe the MobileNetV2 step trains beside it (`lib.probe`)
                files += [paths.probe_metrics, paths.probe_predictions]
            if r == rounds.first:
                files += [paths.methods, paths.model]
    return files


def _report_reads(run: RunPaths, rounds: Rounds, round_: None) -> list[Path]:
    """The report reads the audit's summary, the comparison, the first round's metrics and histories, and the
    step timings (it always runs: it describes the run itself)."""
    first = run.round(rounds.first.name)
    return [run.audit_summary, run.comparison_dir, run.round(rounds.first.name).split_manifest,
            *[first.model(m).metrics for m in MODELS], *[first.model(m).history for m in MODELS]]


@dataclass(frozen=True)
class Step:
    """One notebook: the params it uses and the run's artefacts it reads, which together with its
    code make its key (`step_key`): a step whose key is unchanged is reused.

    ``uses``: dotted names of the params it reads (``"mobilenet_v2.weights"``: that field only;
    ``"*"``: all). ``reads(run, rounds, round)``: the artefact files it reads (`lib.paths`).
    ``reads_raw_data``: whether it reads the raw images (the audit: its key includes their listing).
    ``always``: run it every time (the report describes the run itself: its timings, what was reused).
    ``model``: the artefact folder a per-round step writes in each round (None: the step is run-wide).
    """

    notebook: str
    title: str
    uses: tuple[str, ...]
    reads: Callable[[RunPaths, Rounds, Round | None], list[Path]]
    reads_raw_data: bool = False
    always: bool = False
    model: str | None = None

    @property
    def per_round(self) -> bool:
        return self.model is not None


# What a model step's results depend on; training.verbose and training.data_workers do not (any number of worker
# threads serves the same batches), so changing them reuses the trained models.
_MODEL_PARAMS = ("data.image_size", "augmentation", "training.batch_size", "training.backend", "training.deterministic",
                 "training.precision", "minority")
STEPS = (
    # reads the raw images; writes data/ and rounds/<round>/split.csv
    Step("01_data_audit.ipynb", "Data audit",
         ("seed", "data", "split", "evaluation", "audit", "augmentation", "mobilenet_v2.weights"),
         reads=lambda run, rounds, round_: [], reads_raw_data=True),
    # writes rounds/<round>/cnn/
    Step("02_cnn.ipynb", "Custom CNN", (*_MODEL_PARAMS, "cnn"), _model_step_reads("cnn"), model="cnn"),
    # writes rounds/<round>/mobilenetv2/
    Step("03_mobilenetv2.ipynb", "MobileNetV2 transfer learning", (*_MODEL_PARAMS, "mobilenet_v2"),
         _model_step_reads("mobilenetv2"), model="mobilenetv2"),
    # writes comparison/
    Step("04_comparison.ipynb", "Comparison", ("seed", "evaluation", "data.image_size"), _comparison_reads),
    # the report notebook, rendered to report.html and report.pdf
    Step("05_report.ipynb", "Report", ("*",), _report_reads, always=True),
)


@dataclass(frozen=True)
class PlannedStep:
    """One execution of a step: the notebook, the run's rounds, and the round it runs for (None: run-wide)."""

    step: Step
    rounds: Rounds
    round: Round | None = None

    @property
    def round_name(self) -> str | None:
        return None if self.round is None else self.round.name

    @property
    def label(self) -> str:  # its key in steps.json
        return self.step.notebook if self.round is None else f"rounds/{self.round.name}/{self.step.notebook}"

    @property
    def title(self) -> str:
        return self.step.title if self.round is None else f"{self.step.title}, round {self.round.name}"

    def reads(self, run: RunPaths) -> list[Path]:
        """The run folder's artefacts this execution depends on."""
        return self.step.reads(run, self.rounds, self.round)

    def executed_copy(self, run: RunPaths) -> Path:
        folder = run.notebooks_dir if self.round is None else run.round(self.round.name).notebooks_dir
        return folder / self.step.notebook


def planned_steps(params) -> list[PlannedStep]:
    """Every step in order, the per-round ones once per round (all of a round's models before the next round)."""
    rounds = evaluation_rounds(params.evaluation)
    plan = [PlannedStep(STEPS[0], rounds)]
    plan += [PlannedStep(step, rounds, round_) for round_ in rounds for step in STEPS if step.per_round]
    plan += [PlannedStep(step, rounds) for step in STEPS[1:] if not step.per_round]
    return plan


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


def data_source_listing(params) -> str:
    """Cheap identity of the raw data: name, size and modification time of every file of the source.

    The Grocery Store source is pinned by its commit and verified content, so its params say it all.
    """
    data = params.data
    if data.source == "grocery_store":
        return "grocery_store"
    if data.source == "folder":
        files = [p for p in Path(data.directory).rglob("*")]
    else:
        files = [data.manifest, *[Path(p) for p in read_split_manifest(data.manifest)["path"]]]
    lines = []
    for path in sorted(files):
        try:
            stat = path.stat()
            lines.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
        except OSError:
            lines.append(f"{path}\tunreadable")
    return "\n".join(lines)


LIB_DIR = Path(__file__).resolve().parent


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
        name = _module_name(file)
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        pending |= _imported_modules(file.read_text(), package)
        pending |= {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}  # its packages
    files = {f for f in seen if f.name != "__init__.py" or _runs_code(f)}
    for module in seen:  # the data files a module reads by name, beside it
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


def step_key(planned: PlannedStep, params, run: RunPaths, data_listing: str, backend: str | None = None) -> str:
    """Everything a step's results depend on, hashed: same key, same results, so the step can be reused.

    Its notebook and the ``lib`` code it imports, the package versions, the Keras backend
    (``backend``: the name `lib.backends.resolve_backend` gave, None resolves it) and its
    version, the params it uses, the round it runs for (and which round is first), the
    artefacts it reads, and for the audit the raw data's listing. Every step runs Keras (the
    audit its near-duplicate features, the comparison Grad-CAM), so the backend is in every key.
    """
    step = planned.step
    backend = backend or resolve_backend(params.training.backend)
    digest = hashlib.sha256(f"{planned.round}|first round {planned.rounds.first}".encode())
    notebook = NOTEBOOKS_DIR / step.notebook
    digest.update(notebook.read_bytes())
    _digest_paths(lib_dependencies(notebook), digest)
    digest.update(json.dumps(package_versions(), sort_keys=True).encode())
    digest.update(json.dumps(backend_identity(backend), sort_keys=True).encode())
    digest.update(json.dumps(used_params(with_backend(params, backend), step.uses), sort_keys=True).encode())
    if step.reads_raw_data:
        digest.update(data_listing.encode())
    _digest_paths(planned.reads(run), digest, relative_to=run.root)
    return digest.hexdigest()


class StepFailed(RuntimeError):
    """A notebook failed; the message names it and its failing cell."""


class StepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a notebook; the message names it."""


class ChildrenMemoryPeak:
    """The largest resident memory of this process's children together (a step's notebook
    kernel and anything it starts) while the ``with`` block runs, sampled every ``interval`` s.
    Children that were already running when the block began (a worker pool, say) are not the
    block's, and are left out.

    What a step asks of the machine's memory; ``steps.json`` records it per step as
    ``peak_rss_gib``. Sampling can miss a spike shorter than ``interval``.
    """

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_bytes = interval, 0
        self._earlier: set[int] = set()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _resident_bytes(self) -> int:
        total = 0
        for child in psutil.Process().children(recursive=True):
            if child.pid in self._earlier:
                continue
            try:
                total += child.memory_info().rss
            except psutil.Error:  # it ended between the listing and the reading
                pass
        return total

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._resident_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> ChildrenMemoryPeak:
        self._earlier = {child.pid for child in psutil.Process().children(recursive=True)}
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()

    @property
    def gib(self) -> float:
        return round(self.peak_bytes / 2**30, 2)


def execute_step(planned: PlannedStep, params_file: Path, run: RunPaths, key: str | None = None,
                 backend: str | None = None) -> Path:
    """Execute one notebook with papermill into the run (or round) folder's notebooks/; return the executed copy.

    A per-round step also gets its input ``key``, under which it keeps each finished training.
    Its kernel runs Keras on ``backend`` (None: resolved from the params), deterministically when
    ``training.deterministic`` (`lib.backends.kernel_environment`).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = load_params(params_file)
    backend = backend or resolve_backend(params.training.backend)
    kernel_variables = kernel_environment(backend, params.training.deterministic)
    step = planned.step
    executed = planned.executed_copy(run)
    executed.parent.mkdir(parents=True, exist_ok=True)
    parameters = {"params_file": str(params_file), "run_dir": str(run.root)}
    if planned.round is not None:
        parameters |= {"round_name": planned.round.name, "step_key": key}
    try:
        with environment_variables(kernel_variables):  # the kernel inherits them
            papermill.execute_notebook(
                NOTEBOOKS_DIR / step.notebook,
                executed,
                parameters=parameters,
                cwd=str(NOTEBOOKS_DIR),
                progress_bar=True,
                # papermill fails a cell whose output the kernel has not sent 4 s after it finished; on a loaded
                # machine (a nice'd benchmark beside other work) that wait is longer, and the results are fine.
                iopub_timeout=IOPUB_TIMEOUT_SECONDS,
            )
    except PapermillExecutionError as error:
        raise StepFailed(
            f"{planned.label} failed in cell {error.cell_index} (execution count {error.exec_count}): "
            f"{error.ename}: {error.evalue}\n"
            f"The executed copy, with the full traceback, is {executed}"
        ) from None
    return executed


def _link_caches(source: str, target: str) -> None:
    """Copy a file into staging; cache files (written once, replaced whole, never edited) are hard-linked."""
    if Path(source).parent.name == "interim":
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def publish(staging: RunPaths, final: RunPaths, reports_dir: Path) -> None:
    """Swap the finished staging folder in for the previous run, then publish its report."""
    previous = final.root.with_name(f".previous-{final.root.name}")
    shutil.rmtree(previous, ignore_errors=True)
    if final.root.exists():
        final.root.rename(previous)
    staging.root.rename(final.root)
    shutil.rmtree(previous, ignore_errors=True)
    for source, name in ((final.report_html, "report.html"), (final.report_pdf, "report.pdf")):
        if not source.is_file():  # no PDF where WeasyPrint cannot print (`lib.report.render`): none of another run
            (reports_dir / name).unlink(missing_ok=True)
            continue
        partial = reports_dir / f".{name}.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, reports_dir / name)  # atomic: a reader never sees half a report


def remove_unplanned_rounds(run: RunPaths, plan: list[PlannedStep]) -> list[str]:
    """Delete the round folders no step of ``plan`` runs for; return their names.

    They come from a run with other evaluation params (copied from the last published run, or
    left in an unfinished staging folder), and would otherwise be published with this one.
    """
    planned = {p.round_name for p in plan if p.round_name is not None}
    stale = sorted(f for f in run.rounds_dir.iterdir() if f.name not in planned) if run.rounds_dir.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder)
    return [folder.name for folder in stale]


def run_study(params_file: str | Path, force: bool = False, render: bool = True) -> dict[str, dict]:
    """Validate the params, run (or reuse) every step in a staging folder, render, publish.

    Returns ``steps.json``'s content: for each step, its wall time, its input key and
    whether it was reused from the previous run.
    """
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in a progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = load_params(params_file)
    backend = resolve_backend(params.training.backend)  # once: every kernel runs Keras on it
    print(f"Keras backend: {backend} (training.backend: {params.training.backend})", flush=True)
    params_path = Path(params_file).resolve()
    final = run_paths(params)
    staging = run_paths(params, final.root.with_name(f".staging-{params.run_name}"))
    previous = json.loads(final.steps.read_text()) if final.steps.is_file() else {}
    progress = staging.root / "progress.json"  # what an unfinished run had done; removed on success
    if progress.is_file():
        # An earlier run stopped part-way: the steps it finished are in staging, valid for
        # their recorded keys; the one it was running is recorded with no key, so it reruns.
        print(f"resuming the unfinished run in {staging.root}", flush=True)
        previous |= json.loads(progress.read_text())
    else:
        shutil.rmtree(staging.root, ignore_errors=True)
        if final.root.is_dir():
            shutil.copytree(final.root, staging.root, copy_function=_link_caches)  # what unchanged steps reuse
    staging.root.mkdir(parents=True, exist_ok=True)
    staging.params_used.write_text(json.dumps(params.study_values(), indent=2) + "\n")
    data_listing = data_source_listing(params)

    plan = planned_steps(params)
    for name in remove_unplanned_rounds(staging, plan):
        print(f"round {name} is not in this run's evaluation params: its folder is left out", flush=True)

    record: dict[str, dict] = {}
    for number, planned in enumerate(plan, start=1):
        key = step_key(planned, params, staging, data_listing, backend)
        before = previous.get(planned.label, {})
        unchanged = before.get("key") == key and planned.executed_copy(staging).is_file()
        if unchanged and not (force or planned.step.always):
            print(f"[{number}/{len(plan)}] {planned.title}: inputs unchanged, reused", flush=True)
            record[planned.label] = {"key": key, "seconds": before.get("seconds"), "reused": True,
                                     "peak_rss_gib": before.get("peak_rss_gib")}
        else:
            print(f"[{number}/{len(plan)}] {planned.title}: {planned.label}", flush=True)
            progress.write_text(json.dumps(previous | record | {planned.label: {"key": None}}, indent=2) + "\n")
            start = time.perf_counter()
            try:
                with ChildrenMemoryPeak() as memory:
                    execute_step(planned, params_path, staging, key, backend)
            except KeyboardInterrupt:
                raise StepInterrupted(
                    f"in {planned.label}; its executed copy so far is {planned.executed_copy(staging)}"
                ) from None
            record[planned.label] = {"key": key, "seconds": round(time.perf_counter() - start, 1), "reused": False,
                                     "peak_rss_gib": memory.gib}
        progress.write_text(json.dumps(previous | record, indent=2) + "\n")
        staging.steps.write_text(json.dumps(record, indent=2) + "\n")  # the report quotes these

    if render:
        from lib.report import render as render_report

        print("Rendering the report (HTML + PDF)", flush=True)
        start = time.perf_counter()
        pages = render_report(staging.notebooks_dir / STEPS[-1].notebook, staging.report_html, staging.report_pdf,
                              title=f"Product image classification: {params.run_name}")
        record[REPORT_STEP] = {"seconds": round(time.perf_counter() - start, 1), "reused": False}
        staging.steps.write_text(json.dumps(record, indent=2) + "\n")
        staging.report_info.write_text(json.dumps({"pdf_pages": pages}) + "\n")
    progress.unlink()
    publish(staging, final, params.reports_dir)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.splitlines()[0])
    parser.add_argument("params_file", nargs="?", default="params/default.yaml", help="YAML params file")
    parser.add_argument("--force", action="store_true", help="redo every step, even those whose inputs did not change")
    parser.add_argument(
        "--assets",
        metavar="DIR",
        help="a local folder with copies of the downloads (Grocery Store archive, MobileNetV2 weights), "
        "for machines without internet: they are copied into Keras' cache first",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.assets:
            for path in seed_keras_cache(args.assets).values():
                print(f"offline copy in Keras' cache: {path}")
        record = run_study(args.params_file, force=args.force)
    except (ParamsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"error: {error}\nThe previous report and artefacts are unchanged.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        where = f" {interruption}" if str(interruption) else ""
        print(f"\ninterrupted{where}\nThe previous report and artefacts are unchanged.", file=sys.stderr)
        return 130
    print("\nWall time and peak memory per step:")
    for step, entry in record.items():
        note = "  (reused: inputs unchanged)" if entry["reused"] else ""
        memory = f"{entry['peak_rss_gib']:6.2f} GiB" if entry.get("peak_rss_gib") is not None else " " * 10
        print(f"  {step:<40} {entry['seconds'] or 0:8.1f} s {memory}{note}")
    print(f"  {'total':<40} {time.perf_counter() - started:8.1f} s")
    params = load_params(args.params_file)
    pages = json.loads(run_paths(params).report_info.read_text())["pdf_pages"]
    pdf = f"and report.pdf ({pages} pages)" if pages else "(no PDF: WeasyPrint cannot print on this machine)"
    print(f"\nReport: {params.reports_dir / 'report.html'} {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
