"""Every round's results read back and compared: each statistic computed once, here.

    stats         bootstrap intervals, McNemar's test, metrics averaged over rounds
    calibration   calibration error, reliability bins, precision-recall curves
    compare       both models side by side: every table and test, computed once, written, read back
    probe_check   fine-tuned MobileNetV2 against its linear probe on validation: paired interval, warning, words
    errors        the test images worth looking at: side by side, top losses, most-confused pairs, discordant
    explain       Grad-CAM maps (for any image) of the examples the report shows
    run_comparison  finished runs side by side: params that differ, metrics, rounds, steps, paired tests
"""
