"""The MLflow tracking store the runs are logged to: where it is, how to open it safely from several processes.

Where (`store_uri`): the params' ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file beside the
runs, ``sqlite:///<reports_dir>/mlruns.db``, whose artefacts go to ``<reports_dir>/mlartifacts/`` (works offline,
nothing to start). What is logged, and when: `lib.pipeline.tracking`.

Several runs may log at once (two ``./run_all.sh`` side by side, a notebook beside a run). SQLite allows one
writer at a time and MLflow's SQLite store gives up on a busy file, so every writer of a SQLite store holds an
exclusive lock on ``<store>.lock`` while it writes (`Store.writing`), and a call that still meets a busy
database (the UI, say) is retried (`_Retrying`). MLflow is imported only when a store is opened: the study's
steps never import it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from lib.core.paths import PROJECT_ROOT

STORE_FILE = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
SETTINGS_FILE = "tracking.json"  # in a run folder: the store and experiment its run was logged to
RETRIES = 8


def default_uri(reports_dir: Path) -> str:
    return f"sqlite:///{Path(reports_dir).resolve() / STORE_FILE}"


def absolute_uri(uri: str) -> str:
    """A relative SQLite path (``sqlite:///reports/mlruns.db``) from the project root, as a params file's paths."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        return prefix + str(PROJECT_ROOT / uri[len(prefix):])
    return uri


def store_uri(tracking, reports_dir: Path) -> str:
    """The store of a run (``tracking``: its `lib.core.config.TrackingParams`): the params' uri, else
    ``MLFLOW_TRACKING_URI``, else `default_uri`."""
    return absolute_uri(tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(reports_dir))


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def write_settings(run_dir: Path, uri: str, experiment: str) -> None:
    """Record in a run folder where its run is logged (read by `open_store_of_run`, e.g. after an export)."""
    (Path(run_dir) / SETTINGS_FILE).write_text(json.dumps({"uri": uri, "experiment": experiment}, indent=2) + "\n")


def settings_of_run(run_dir: Path) -> dict | None:
    file = Path(run_dir) / SETTINGS_FILE
    return json.loads(file.read_text()) if file.is_file() else None


class _Retrying:
    """An `mlflow.MlflowClient` whose calls are tried again while the SQLite database is busy."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for attempt in range(RETRIES):
                try:
                    return method(*args, **kwargs)
                except Exception as error:  # MlflowException or SQLAlchemy's OperationalError, by message
                    if "database is locked" not in str(error) or attempt == RETRIES - 1:
                        raise
                    time.sleep(0.1 * 2**attempt)

        return call


class Store:
    """An open MLflow store and the study's experiment in it. ``client``: an `mlflow.MlflowClient` (retried)."""

    def __init__(self, uri: str, experiment: str):
        import logging

        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its table-creation chatter in a run's output

        self.uri, self.experiment = uri, experiment
        self.database = sqlite_file(uri)
        if self.database is not None:
            self.database.parent.mkdir(parents=True, exist_ok=True)
        with self.writing():  # a new SQLite store creates its tables: one process at a time
            self.client = _Retrying(MlflowClient(tracking_uri=uri, registry_uri=uri))
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = (self.database.parent / ARTIFACTS_DIR).as_uri() if self.database is not None else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = found.experiment_id

    @contextmanager
    def writing(self):
        """Hold the store's lock file while writing (a SQLite store; other stores serialise writers themselves)."""
        if self.database is None:
            yield
            return
        with open(self.database.with_name(self.database.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def search(self, filter_string: str, max_results: int = 1000, order_by: list[str] | None = None):
        """The study's runs matching an MLflow filter (``tags.`study.kind` = 'published'``), newest first."""
        return self.client.search_runs([self.experiment_id], filter_string, max_results=max_results,
                                       order_by=order_by or ["attributes.start_time DESC"])

    def parent_of_folder(self, run_dir: Path, status: str | None = "FINISHED"):
        """The latest run logged for the run folder ``run_dir`` (with ``status``; None: any), or None."""
        found = self.search(f"tags.`study.run_folder` = '{quoted(str(Path(run_dir).resolve()))}'"
                            + (f" and attributes.status = '{status}'" if status else ""), max_results=1)
        return found[0] if found else None


def quoted(text: str) -> str:
    """``text`` inside an MLflow filter's single quotes."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def open_store_of_run(run_dir: Path) -> Store | None:
    """The store a published run was logged to (its `SETTINGS_FILE`); None when it was not logged (tracking off)."""
    settings = settings_of_run(run_dir)
    if settings is None:
        return None
    return Store(settings["uri"], settings["experiment"])
