#!/usr/bin/env bash
# The web app on a finished run (see lib/deploy/app.py):
#   ./app.sh [--run reports/default] [--port 8501] [--address 127.0.0.1] [--top-k 3]
# then open http://127.0.0.1:8501. It listens on this machine only unless --address says otherwise.
#
# Creates or reuses .venv from requirements.lock (tools/setup_env.sh), like ./run_all.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/tools/setup_env.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec "${STUDY_VENV:-$root/.venv}/bin/python" -m lib.deploy.app "$@"
