#!/usr/bin/env bash
# Compare finished runs side by side: ./compare_runs.sh RUN RUN [...] [--out DIR]
#
# RUN: a run name under reports/ (or a run folder). Writes reports/comparisons/<run>-vs-<run>/comparison.html
# (and .pdf): the params that differ, each model's test metrics with their intervals, macro-F1 per round, the
# minority-class methods, step times, paired tests on shared splits, the setting against test macro-F1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tools/setup_env.sh
exec .venv/bin/python -m lib.report.run_comparison "$@"
