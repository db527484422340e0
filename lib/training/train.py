"""Training protocols: one ``fit`` per phase, with the study's callbacks, timed.

A phase compiles the model with its optimiser (Adam, or AdamW with weight decay), its step-size
schedule (constant, or linear warm-up then cosine decay) and categorical cross-entropy (with label
smoothing if asked), fits for up to its epoch budget with EarlyStopping on val_loss (best weights
restored at the end: no checkpoint file is needed), and returns its history as a table.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from lib.core import progress
from lib.data.inputs import keras_input


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, validation included; each epoch, with its scores, also told to the runner
    (`lib.core.progress`) under the phase's name."""

    def __init__(self, phase: str = "training"):
        super().__init__()
        self.phase = phase

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []
        progress.report("phase", phase=self.phase, epochs=self.params.get("epochs"))

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        progress.report("epoch", phase=self.phase, epoch=epoch + 1, epochs=self.params.get("epochs"),
                        seconds=round(self.seconds[-1], 2), metrics=dict(logs or {}))


def learning_rate_schedule(phase, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The phase's step size: a constant, or a linear warm-up from 0 followed by a cosine decay to 0 at the end of
    the epoch budget (early stopping may end the phase before)."""
    if phase.schedule == "constant" and not phase.warmup_epochs:
        return phase.learning_rate
    warmup_steps = phase.warmup_epochs * steps_per_epoch
    total_steps = phase.epochs * steps_per_epoch
    # Keras' CosineDecay warms up linearly from its initial rate to warmup_target, then decays along a cosine to
    # alpha x warmup_target; alpha = 1 keeps the rate constant after the warm-up.
    if phase.schedule == "constant":
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=phase.learning_rate, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else phase.learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=phase.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def optimizer(phase, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, as the original study; AdamW (decoupled weight decay) when the phase has a weight decay."""
    learning_rate = learning_rate_schedule(phase, steps_per_epoch)
    if phase.weight_decay:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=phase.weight_decay)
    return keras.optimizers.Adam(learning_rate=learning_rate)


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
    """Compile and fit one phase (a `lib.core.config.PhaseParams`); returns one row per epoch run.

    Columns: epoch (within the phase), phase, loss, accuracy, val_loss, val_accuracy,
    seconds, best (the epoch whose weights the model keeps).
    """
    model.compile(
        optimizer=optimizer(phase, steps_per_epoch=len(train_ds)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=phase.label_smoothing),
        metrics=["accuracy"],
    )
    timer = EpochTimer(name)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=phase.patience, restore_best_weights=True),
        timer,
    ]
    fitted = model.fit(
        keras_input(train_ds),
        validation_data=keras_input(val_ds),
        epochs=phase.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=verbose,
        # The streams draw each epoch's order themselves (`lib.data.inputs.Batches`); Keras' shuffle of a PyDataset's
        # batch order would shuffle again, and serve the batches out of the order the worker threads prepare them in
        shuffle=False,
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
