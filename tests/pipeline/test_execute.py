"""Running a notebook step (`lib.pipeline.execute`): what a step's child processes hold in memory."""

import pytest


@pytest.mark.slow
def test_children_memory_peak_measures_what_a_child_process_holds():
    """Measured in a fresh interpreter: this test process may have children of earlier tests (worker pools)."""
    import subprocess
    import sys

    measure = """
import subprocess, sys, time
import psutil
from lib.pipeline.execute import ChildrenMemoryPeak
holding = "import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
# a child already running when the blocks begin, its 300 MiB touched (it says so): never a block's
already_running = subprocess.Popen([sys.executable, "-c", holding.replace("time.sleep(1.5)", "print(1, flush=True); "
                                    "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
already_running.stdout.readline()
with ChildrenMemoryPeak(interval=0.05) as large:
    subprocess.run([sys.executable, "-c", holding], check=True)
with ChildrenMemoryPeak(interval=0.05) as small:
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1.5)"], check=True)
already_running.kill()
print(large.gib, small.gib, psutil.Process().memory_info().rss / 2**30)
"""
    printed = subprocess.run([sys.executable, "-c", measure], check=True, capture_output=True, text=True).stdout
    large, small, own = map(float, printed.split())
    # Bounds that the machine's load cannot break. The block's child touches 300 MiB: the floor of its reading.
    # A child read between its fork and its exec shows the memory of this interpreter, which it starts as a copy
    # of: the most a small child can read, far below the 300 MiB of the child that was already running.
    assert large >= 0.28
    assert small <= own + 0.05
