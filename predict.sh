#!/usr/bin/env bash
# Classify photos with a finished run's model (see lib/deploy/predict.py):
#   ./predict.sh [--run reports/default] [--model mobilenetv2|cnn] [--runtime keras|onnx] [--top-k K] [--rank margin|entropy]
#                [--csv FILE|--json FILE] IMAGE_OR_FOLDER...
#
# Creates or reuses .venv from requirements.lock (tools/setup_env.sh), like ./run_all.sh.
# Relative paths are taken from where you call it, not from the project folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/tools/setup_env.sh"
# Fewer of TensorFlow's log lines on stderr, where the unreadable files are named (a few start-up lines remain).
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec "${STUDY_VENV:-$root/.venv}/bin/python" -m lib.deploy.predict "$@"
