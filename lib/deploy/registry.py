"""Exported models in MLflow's model registry: each model a run exports (`lib.deploy.export`) is logged to its
run's parent run in MLflow (``export/<model>/``: ``model.json``, ``model.onnx``, ``model.keras``) and registered as
a version of the model ``<run_name>.<model>`` with its test metrics as the version's tags.

The run's store is the one its folder names (``tracking.json``, `lib.core.tracking_store`); a run that was not
logged (tracking off) registers nothing.
"""

from __future__ import annotations

from pathlib import Path

from lib.core.tracking_store import open_store_of_run

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "loss", "test_images")


def registered_name(run_dir: Path, model: str) -> str:
    return f"{Path(run_dir).resolve().name}.{model}"


def register_exports(run_dir: Path, described: dict[str, dict]) -> list[str]:
    """Log and register each exported model (``described``: model name -> its ``model.json``); returns
    "name version N" for each, or an empty list when the run was not logged."""
    store = open_store_of_run(run_dir)
    if store is None:
        return []
    parent = store.parent_of_folder(run_dir)
    if parent is None:
        return []
    registered = []
    with store.writing():
        for model, description in described.items():
            folder = Path(run_dir) / "export" / model
            store.client.log_artifacts(parent.info.run_id, str(folder), f"export/{model}")
            name = registered_name(run_dir, model)
            if not store.client.search_registered_models(f"name = '{name}'"):
                store.client.create_registered_model(name, description=f"{model} of the run {Path(run_dir).name}")
            metrics = description.get("test_metrics", {})
            tags = {f"test_{key}": str(metrics[key]) for key in METRICS if key in metrics}
            tags |= {f"test_f1/{label}": str(scores["f1"]) for label, scores in metrics.get("per_class", {}).items()}
            version = store.client.create_model_version(
                name, f"{parent.info.artifact_uri}/export/{model}", run_id=parent.info.run_id, tags=tags,
                description=f"exported from {description.get('exported_from', {}).get('file', model)}")
            registered.append(f"{name} version {version.version}")
    return registered
