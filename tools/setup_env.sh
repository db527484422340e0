#!/usr/bin/env bash
# Create, or reuse, the project's virtual environment from requirements.lock.
#
#   tools/setup_env.sh            # prints nothing when .venv already matches the lock (and no STUDY_ASSETS)
#   tools/setup_env.sh --gpu      # NVIDIA GPU machines: adds JAX's CUDA 12 build (requirements-gpu.txt)
#
# The venv is rebuilt only when requirements.lock (with --gpu, or STUDY_GPU=1: and
# requirements-gpu.txt) changed since it was made (their hash is kept in .venv/.lock.sha256);
# a GPU venv also serves the plain command. Set STUDY_VENV to put the venv elsewhere,
# STUDY_PYTHON to build it with a given interpreter (3.11, 3.12 or 3.13), and STUDY_ASSETS to a
# folder holding copies of the downloads (the Grocery Store archive, the MobileNetV2 weights) on a
# machine without internet: they are copied into Keras' cache (python -m lib.data.assets), so that
# ./run_all.sh and the tests, which both start here, find them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpu="${STUDY_GPU:-0}"
for argument in "$@"; do
  case "$argument" in
    --gpu) gpu=1 ;;
    *) echo "usage: tools/setup_env.sh [--gpu]" >&2; exit 2 ;;
  esac
done
venv="${STUDY_VENV:-$root/.venv}"
lock="$root/requirements.lock"
gpu_requirements="$root/requirements-gpu.txt"
stamp="$venv/.lock.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
with_gpu="$want+gpu:$(sha256sum "$gpu_requirements" | cut -d' ' -f1)"
requirements=(-r "$lock")
if [ "$gpu" = 1 ]; then
  want="$with_gpu"
  requirements+=(-r "$gpu_requirements")
fi

# The PDF report is printed by WeasyPrint, which needs Pango and a font from the system.
if ! ldconfig -p 2>/dev/null | grep -q "libpangoft2-1.0.so.0" || ! fc-list 2>/dev/null | grep -qi dejavu; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Pango and DejaVu fonts for the PDF report (apt-get)..."
    apt-get update -qq && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 fontconfig fonts-dejavu-core >/dev/null
  else
    echo "warning: the PDF report needs Pango and fonts: apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core" >&2
  fi
fi

# The venv as a named Jupyter kernel, for a Jupyter or VS Code outside the venv (the notebooks name it);
# registered for this user, and again whenever it points at another Python.
register_kernel() {
  local spec="${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels/product-image-study/kernel.json"
  if ! grep -qF "\"$venv/bin/python\"" "$spec" 2>/dev/null; then
    "$venv/bin/python" -m ipykernel install --user --name product-image-study \
      --display-name "Python (product-image-study)" >/dev/null
    echo "Jupyter kernel 'Python (product-image-study)' registered: $venv/bin/python"
  fi
}

build_venv() {
  # The lock installs on Python 3.11 (3.11.5 or newer: some locked wheels need it), 3.12 and 3.13:
  # take STUDY_PYTHON when set, else the first such interpreter on PATH.
  python=""
  for candidate in ${STUDY_PYTHON:-} $(type -ap python3.11 python3.12 python3.13 python3); do
    if "$candidate" -c 'import sys, venv; sys.exit(not ((3, 11, 5) <= sys.version_info[:3] < (3, 14)))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
  if [ -z "$python" ]; then
    echo "error: Python 3.11 (3.11.5 or later), 3.12 or 3.13, with venv, is needed on PATH (or as STUDY_PYTHON);" \
         "a conda environment's Python will do (activate it, or set STUDY_PYTHON to it)" >&2
    exit 1
  fi

  echo "Setting up $venv from requirements.lock$([ "$gpu" = 1 ] && echo " and requirements-gpu.txt") (the first time takes a few minutes)..."
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
  echo "$want" > "$stamp"
  echo "Environment ready: $venv"
}

have="$(cat "$stamp" 2>/dev/null || true)"
if ! { [ -x "$venv/bin/python" ] && { [ "$have" = "$want" ] || [ "$have" = "$with_gpu" ]; }; }; then
  build_venv
fi

register_kernel

if [ -n "${STUDY_ASSETS:-}" ]; then
  if [ ! -d "$STUDY_ASSETS" ]; then
    echo "error: STUDY_ASSETS=$STUDY_ASSETS is not a folder (it should hold copies of the downloads)" >&2
    exit 2
  fi
  # From the project root, so that this checkout's lib is the one imported.
  assets="$(realpath "$STUDY_ASSETS")"
  (cd "$root" && "$venv/bin/python" -m lib.data.assets "$assets")
fi
