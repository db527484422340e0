"""The run store: where a run is written (staging), how it is published (one atomic switch), who may write it.

    reports/<run_name>                  a symbolic link to the published version of the run
    reports/.runs/<run_name>/<version>/ the published version, and the one before it (for readers still on it)
    reports/.runs/<run_name>/publishing.json   present only while a publish is under way (its journal)
    reports/.staging-<run_name>/        the run being written: a copy of the published one, with progress.json
    reports/.locks/<run_name>.lock      held by the one process writing the run, from staging to publish

One writer per run: `run_lock` is held for the whole run; a second runner of the same run stops at once naming the
holder, or waits (``--wait``). Publish (`publish`) first writes its journal, then renames the finished staging
folder into ``.runs/<run_name>/``, switches the link to it, copies the report to ``reports/report.html`` and prunes
older versions. A reader that resolves ``reports/<run_name>`` gets the old version or the new, each complete. A kill
at any point leaves the journal, and the next run of that name finishes the publish (`recover`) before anything
else; nothing finished is computed again.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from lib.core import store
from lib.core.paths import RunPaths, copy_run

VERSIONS_DIR = ".runs"
LOCKS_DIR = ".locks"
KEEP_VERSIONS = 2  # the published version and the one before it, which a reader may still be reading
PROGRESS_FILE = "progress.json"  # in a staging folder: which steps it holds, under which keys


def lock_file(link: Path) -> Path:
    """The lock of the run published at ``link`` (``reports/<run_name>``, or a second process's own copy)."""
    return link.parent / LOCKS_DIR / f"{link.name}.lock"


def run_lock(link: Path, wait: bool = False, on_wait=None):
    """Hold the lock of the run published at ``link`` (`lib.core.store.exclusive`)."""
    return store.exclusive(lock_file(link), f"the run {link.name!r} ({link})", wait=wait, on_wait=on_wait)


def versions_of(link: Path) -> Path:
    return link.parent / VERSIONS_DIR / link.name


def journal_of(link: Path) -> Path:
    return versions_of(link) / "publishing.json"


def staging_of(link: Path) -> Path:
    return link.with_name(f".staging-{link.name}")


def progress_of(staging: Path) -> Path:
    return staging / PROGRESS_FILE


def stage(link: Path, say=print, reuse_from: Path | None = None) -> tuple[RunPaths, dict]:
    """The staging folder of the run published at ``link``, and what an unfinished run left there.

    An unfinished run (its progress file there): resumed, the steps it finished reusable under their recorded
    keys. Else a fresh copy of the published run (what unchanged steps reuse), or of ``reuse_from`` where nothing
    is published yet (a sweep's earlier run), or an empty folder. Call it holding `run_lock`.
    """
    staging = RunPaths(staging_of(link))
    progress = progress_of(staging.root)
    if progress.is_file():
        say(f"resuming the unfinished run in {staging.root}")
        return staging, store.read_json(progress, f"delete the folder {staging.root} to start the run afresh "
                                                  "(its finished steps are then computed again)")
    shutil.rmtree(staging.root, ignore_errors=True)
    source = link if link.is_dir() or reuse_from is None else Path(reuse_from)
    if source.is_dir():
        copy_run(source, staging.root)
    staging.root.mkdir(parents=True, exist_ok=True)
    store.write_json(progress, {})
    return staging, {}


def new_version(link: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")
    return versions_of(link) / f"{stamp}-{os.getpid()}"


def publish(staging: RunPaths, link: Path, reports_dir: Path | None) -> Path:
    """Make the finished ``staging`` folder the published run at ``link``; return its version folder.

    ``reports_dir``: where to copy its report as ``report.html``/``report.pdf`` (None: a folder that is not
    published, as a second process's copy). Ctrl-C waits until the publish is complete.
    """
    with store.signals_deferred():
        version = new_version(link)
        version.parent.mkdir(parents=True, exist_ok=True)
        store.write_json(journal_of(link), {"staging": str(staging.root), "version": str(version),
                                            "reports_dir": None if reports_dir is None else str(reports_dir)})
        _finish_publish(link)
    return version


def _finish_publish(link: Path) -> None:
    """Carry out the journal's publish from wherever it stopped; every stage can be done again."""
    journal = store.read_json(journal_of(link), f"delete it; the run {link.name!r} is then published by its next run")
    staging, version = Path(journal["staging"]), Path(journal["version"])
    move_into_versions(staging, version, link)
    store.switch_link(link, version)
    if journal["reports_dir"] is not None:
        copy_report(RunPaths(version), Path(journal["reports_dir"]))
    prune_versions(link)
    journal_of(link).unlink()


def move_into_versions(staging: Path, version: Path, link: Path) -> None:
    """The finished staging folder becomes ``version`` (one rename); a run published as a plain folder at ``link``
    (before versions) moves beside it, as the oldest version."""
    if staging.is_dir() and not version.is_dir():
        staging.rename(version)
    progress_of(version).unlink(missing_ok=True)  # the version is finished: no run resumes it
    if link.is_dir() and not link.is_symlink():
        link.rename(versions_of(link) / "00000000T000000.000000-before-versions")


def recover(link: Path, say=print) -> None:
    """Finish a publish of the run at ``link`` that a kill interrupted (its journal is there). Call it holding
    `run_lock`."""
    if not journal_of(link).is_file():
        return
    journal = store.read_json(journal_of(link), f"delete it; the run {link.name!r} is then published by its next run")
    if not (Path(journal["staging"]).is_dir() or Path(journal["version"]).is_dir()):
        say(f"an interrupted publish of {link.name!r} left nothing to publish: the published run is unchanged")
        journal_of(link).unlink()
        return
    say(f"an interrupted publish of {link.name!r} was found: finishing it (the run it publishes is complete)")
    with store.signals_deferred():
        _finish_publish(link)


def copy_report(run: RunPaths, reports_dir: Path) -> None:
    """The run's report as ``reports/report.html`` and ``report.pdf``, each replaced in one step; no PDF where
    WeasyPrint cannot print (`lib.report.render`): then none of another run either."""
    for source, name in ((run.report_html, "report.html"), (run.report_pdf, "report.pdf")):
        if not source.is_file():
            (reports_dir / name).unlink(missing_ok=True)
            continue
        partial = reports_dir / f".{name}.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, reports_dir / name)


def prune_versions(link: Path, keep: int = KEEP_VERSIONS) -> list[Path]:
    """Delete all but the ``keep`` newest versions of the run (the published one is always kept); return them."""
    published = link.resolve()
    versions = sorted((p for p in versions_of(link).iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    stale = [p for p in versions[keep:] if p != published]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale
