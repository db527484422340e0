"""The run store's primitives: state files written whole or not at all, one writer per thing, children that end
with their parent.

- `write_json` / `write_text` put a file in place by renaming a finished, flushed temporary file beside it: a
  reader, or the next run after a kill or a full disk, finds the old content or the new, never half of it.
  `read_json` names an unreadable file and says what to do about it.
- `exclusive` holds an operating-system lock (``fcntl.flock``) on a lock file: a run being written, a scratch run
  a notebook computes into, the pixel cache, the dataset's extraction. The kernel releases it when its holder
  ends, however it ends (a kill included), so a lock is never left behind. The holder writes who it is into the
  lock file, so that whoever waits can be told (process, host, since when, what it runs).
- `die_with_parent` makes this process end when the process that started it ends (Linux), so that a killed runner
  leaves no step writing into its staging folder.

Locks and the parent signal are POSIX/Linux facilities, as the rest of the project assumes (README, Supported
systems).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class StateFileError(RuntimeError):
    """A state file (``steps.json``, ``progress.json``, ...) that cannot be read; the message names it and what
    to do."""


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it."""


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, flushed to disk, renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    """`write_text` of ``value`` as indented JSON."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: Path, what_to_do: str, default=None):
    """The JSON in ``path`` (``default`` when there is no such file); a file that cannot be read or parsed raises
    `StateFileError` naming it, the reason, and ``what_to_do``."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StateFileError(f"{path} cannot be read ({error}): {what_to_do}") from None


def holder_description() -> dict:
    """Who holds a lock: this process, its host, since when, and its command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))}


def describe_holder(lock_file: Path) -> str:
    """The holder a lock file names, in words ("process 4242 on node0 since 2026-12-07T19:40:12+00:00: lib.run")."""
    try:
        holder = json.loads(Path(lock_file).read_text())
        return f"process {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, wait: bool = False, on_wait=None) -> Iterator[None]:
    """Hold the lock ``lock_file`` while the block runs.

    Held elsewhere: ``wait`` False raises `LockHeld` at once, naming ``what`` and the holder; ``wait`` True blocks
    until it is free, calling ``on_wait(message)`` once first. The lock file stays (it is reused); its content
    names the last holder.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"{what} is being written by {describe_holder(lock_file)}"
            if not wait:
                raise LockHeld(message) from None
            if on_wait is not None:
                on_wait(f"{message}: waiting for it to finish")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder_description()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing the only descriptor releases the lock


def is_locked(lock_file: Path) -> bool:
    """Whether some process holds ``lock_file`` now (False when there is no such file)."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int | None = None, signal_number: int = signal.SIGKILL) -> bool:
    """Ask Linux to send this process ``signal_number`` when its parent ends; True when that is set up.

    ``parent_pid``: the parent expected; when it has already gone (this process was adopted), this process ends
    at once. Elsewhere than Linux nothing happens (False).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal_number)
    return True


@contextlib.contextmanager
def signals_deferred(*signals: int) -> Iterator[None]:
    """Hold back ``signals`` (default SIGINT and SIGTERM) while the block runs, and deliver them after it: a
    Ctrl-C during a publish lands once the publish is complete. Outside the main thread, nothing is held."""
    signals = signals or (signal.SIGINT, signal.SIGTERM)
    received: list[int] = []
    try:
        previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in signals}
    except ValueError:  # not the main thread: Python delivers signals to the main thread only
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link of ``source`` at ``target``; a copy where the filesystem has no hard links (or they would cross
    filesystems)."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        import shutil

        shutil.copy2(source, target)


def switch_link(link: Path, target: Path) -> None:
    """Point the symbolic link ``link`` at ``target`` in one step (a new link renamed over the old): a reader
    resolves the old target or the new, never nothing. ``target`` is written relative to the link's folder, so
    that the folder can move."""
    link = Path(link)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.{time.monotonic_ns()}.link")
    os.symlink(os.path.relpath(target, link.parent), temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
