"""Running a notebook step (`lib.pipeline.execute`): what a step's child processes hold in memory."""

import pytest


@pytest.mark.slow
def test_children_memory_peak_measures_what_a_child_process_holds():
    """Measured in a fresh interpreter: this test process may have children of earlier tests (worker pools)."""
    import subprocess
    import sys

    measure = """
import subprocess, sys, time
from lib.pipeline.execute import ChildrenMemoryPeak
holding = "import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
already_running = subprocess.Popen([sys.executable, "-c", holding.replace("1.5", "30")])  # not the block's
time.sleep(1.0)
with ChildrenMemoryPeak(interval=0.05) as large:
    subprocess.run([sys.executable, "-c", holding], check=True)
with ChildrenMemoryPeak(interval=0.05) as small:
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1.5)"], check=True)
already_running.kill()
print(large.gib, small.gib)
"""
    printed = subprocess.run([sys.executable, "-c", measure], check=True, capture_output=True, text=True).stdout
    large, small = map(float, printed.split())
    # Bounds that other work on the machine cannot break: what else runs can only add to a reading, and adds
    # alike to both blocks, so the 300 MiB the first child touches shows as the floor and as the difference.
    assert large >= 0.28
    assert large - small >= 0.25
