"""benchmarks/cnn_epochs.py: the per-thread accounting and the summary row (the training itself is the benchmark's)."""

import threading
import time

from helpers import load_script

cnn_epochs = load_script("benchmarks/cnn_epochs.py")


def test_cpu_seconds_are_counted_per_thread_under_the_python_threads_name():
    spent, counted = threading.Event(), threading.Event()

    def spin():  # busy until this thread has used 50 ms of CPU, then alive until it has been counted
        while time.thread_time() < 0.05:
            pass
        spent.set()
        counted.wait()

    before = cnn_epochs.thread_cpu_seconds()
    worker = threading.Thread(target=spin, name="batches_0")
    worker.start()
    spent.wait()
    spun = cnn_epochs.thread_cpu_seconds()
    counted.set()
    worker.join()
    spun.subtract(before)
    assert cnn_epochs.by_group(spun)["batches"] >= 0.04, spun


def test_the_summary_row_leaves_the_warm_up_epoch_out_of_median_and_spread():
    records = [{"seconds": s, "images_per_second": 100 / s, "cpu_per_wall": 1.9, "load_average": 0.5}
               for s in (30.0, 10.0, 12.0, 20.0)]
    pools = {"tf_intra_op": 0, "tf_inter_op": 0, "opencv": 1, "data_workers": 1, "os_threads": 14}
    row = cnn_epochs.summary_row("project defaults", records, pools)
    assert row.startswith("| project defaults | 30.0 / 10.0 / 12.0 / 20.0 | 12.0 | 67 % | 8 | 1.90 | 0/0, 1, 1 (14) |")
