#!/usr/bin/env bash
# Regenerate the whole study: ./run_all.sh [PARAMS_FILE]   (default: params/default.yaml)
#
# Creates or reuses .venv from requirements.lock, then runs the notebooks in order with
# papermill (see lib/run.py). Executed copies go to reports/<run_name>/notebooks/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tools/setup_env.sh
exec .venv/bin/python -m lib.run "$@"
