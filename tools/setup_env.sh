#!/usr/bin/env bash
# Create, or reuse, the project's virtual environment from requirements.lock.
#
#   tools/setup_env.sh            # prints nothing when .venv already matches the lock
#
# The venv is rebuilt only when requirements.lock changed since it was made (its hash is
# kept in .venv/.lock.sha256). Set STUDY_VENV to put the venv elsewhere.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STUDY_VENV:-$root/.venv}"
lock="$root/requirements.lock"
stamp="$venv/.lock.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "error: Python 3.11 is needed (python3.11 or python3 on PATH); conda users: conda env create -f environment.yml" >&2
  exit 1
fi

echo "Setting up $venv from requirements.lock (the first time takes a few minutes)..."
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
echo "$want" > "$stamp"
echo "Environment ready: $venv"
