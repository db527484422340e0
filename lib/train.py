"""Training protocols: one ``fit`` per phase, with the study's callbacks, timed.

A phase compiles the model with Adam at its learning rate and categorical cross-entropy,
fits for up to its epoch budget with EarlyStopping on val_loss (best weights restored at
the end: no checkpoint file is needed), and returns its history as a table.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd



class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, validation included."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fit_phase(
    model: keras.Model,
    train_ds,
    val_ds,
    phase,
    *,
    name: str,
    class_weight: dict[int, float] | None,
    verbose: int = 2,
) -> pd.DataFrame:
    """Compile and fit one phase (a `lib.config.PhaseParams`); returns one row per epoch run.

    Columns: epoch (within the phase), phase, loss, accuracy, val_loss, val_accuracy,
    seconds, best (the epoch whose weights the model keeps).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=phase.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=phase.patience, restore_best_weights=True),
        timer,
    ]
    fitted = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=phase.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=verbose,
    )
    history = pd.DataFrame(fitted.history)
    history.insert(0, "phase", name)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["seconds"] = timer.seconds
    history["best"] = history.index == history["val_loss"].idxmin()
    return history


def combine_phases(*histories: pd.DataFrame) -> pd.DataFrame:
    """Histories of consecutive phases as one table, with a running ``epoch`` across phases.

    Only the last phase's best epoch stays marked ``best``: that is the model kept.
    """
    combined = pd.concat(histories, ignore_index=True)
    combined["epoch_in_phase"] = combined["epoch"]
    combined["epoch"] = np.arange(1, len(combined) + 1)
    last = combined["phase"] == histories[-1]["phase"].iloc[0]
    combined["best"] = combined["best"] & last
    return combined


def training_summary(history: pd.DataFrame) -> dict:
    """Epochs run per phase, the kept epoch, and the training wall time."""
    best = history[history["best"]].iloc[-1]
    return {
        "epochs_run": {str(phase): int(n) for phase, n in history.groupby("phase", sort=False).size().items()},
        "best_epoch": int(best["epoch"]),
        "best_val_loss": float(best["val_loss"]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "train_accuracy_at_best": float(best["accuracy"]),
        "training_seconds": float(history["seconds"].sum()),
    }
