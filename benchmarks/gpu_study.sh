#!/usr/bin/env bash
# The study on a GPU machine without internet, in one command (docs/gpu-kit.md):
#
#   here:   .venv/bin/python tools/device_kit.py build      # .device/: images, weights, wheels (ignored by git)
#   there:  bash benchmarks/gpu_study.sh             # the repository copied there with .device/
#
#   bash benchmarks/gpu_study.sh [PARAMS]        (default params/default.yaml; the kit must hold its images)
#
# Installs the kit's wheels into /tmp/gpu-study/site, uses the kit as Keras' cache, prints the GPU and the
# versions, runs `python -m lib.run PARAMS` under JAX within CALL_SECONDS, then copies into $OUT:
# gpu_study.log, steps.json, report.html, summary.csv, per_round.csv, methods.csv
# and throughput.txt (the CNN's training speed in the study, and a bfloat16 probe when time is left);
# after a failed step, its executed notebook with the traceback as failed_step.ipynb.
#
# A fresh machine holds no earlier run, so nothing is reused; a run of this script that reaches
# CALL_SECONDS leaves the study resumable: the same command again on the same machine (which keeps
# reports/ and /tmp/gpu-study) goes on where it stopped. FORCE=1 reruns every step.
#   CALL_SECONDS=580   the time this script may take in all, setup and collecting the results included
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

params="${1:-params/default.yaml}"
kit="${DEVICE_KIT:-.device}"
out="${OUT:-/tmp/gpu-study-out}"
call_seconds="${CALL_SECONDS:-580}"
scratch="${GPU_SCRATCH:-/tmp/gpu-study}"  # the installed wheels and Keras' cache, kept for the next run here
site="$scratch/site"
mkdir -p "$out" "$scratch"
export PYTHONUNBUFFERED=1 KERAS_BACKEND="${KERAS_BACKEND:-jax}"
export PYTHONPATH="$site:$PWD" JUPYTER_PATH="$site/share/jupyter"  # nbconvert's templates come with its wheel
export KERAS_HOME="$scratch/keras-home"  # a copy of the kit's cache: Keras may write there
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each notebook kernel takes the GPU memory it needs, not 75 %

step() { echo; echo "== $(date +%T) (+${SECONDS} s) $*"; }

setup() {
  step "kit: install its wheels, seed Keras' cache"
  if [ ! -f "$kit/SHA256SUMS" ]; then
    echo "error: no kit in $kit: run tools/device_kit.py build with internet first, and copy .device here" >&2; return 2
  fi
  stamp="$(sha256sum "$kit/SHA256SUMS" | cut -c1-64)"
  if [ "$(cat "$site/.kit" 2>/dev/null)" != "$stamp" ]; then  # the last install, kept when the kit is the same
    rm -rf "$site" "$KERAS_HOME"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$kit"/wheels/*.whl \
      || return 2
    cp -r "$kit/keras" "$KERAS_HOME" && echo "$stamp" > "$site/.kit"
  fi
  python3 tools/device_kit.py check --params "$params" --kit "$kit" || return 2

  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv || true
  python3 - <<'EOF' || return 2
import platform, jax, keras, numpy, pandas, sklearn, papermill, pydantic
print(f"python {platform.python_version()}, jax {jax.__version__}, keras {keras.__version__} "
      f"({keras.backend.backend()}), numpy {numpy.__version__}, pandas {pandas.__version__}, "
      f"scikit-learn {sklearn.__version__}, papermill {papermill.__version__}, pydantic {pydantic.__version__}")
print("devices:", jax.devices())
EOF
}

study() {
  left=$((call_seconds - SECONDS - 45))  # 45 s are kept for the copies, the summary and the probe's decision
  step "study: python -m lib.run $params (at most ${left} s)"
  if [ "$left" -lt 60 ]; then echo "error: CALL_SECONDS=$call_seconds leaves the study no time" >&2; return 2; fi
  force=""; [ "${FORCE:-0}" = 1 ] && force="--force"
  # SIGINT first: lib.run stops the notebook, keeps the finished steps for the next run, exits 130.
  timeout --signal=INT --kill-after=20 "$left" python3 -m lib.run "$params" $force 2>&1 | tee "$scratch/study.log"
  status=$?
  failed="$(sed -n 's/^The executed copy, with the full traceback, is //p' "$scratch/study.log" | tail -1)"
  [ -n "$failed" ] && [ -f "$failed" ] && cp "$failed" "$out/failed_step.ipynb" && echo "traceback in \$OUT/failed_step.ipynb"
  if [ "$status" = 130 ] || [ "$status" = 124 ]; then
    echo "unfinished at CALL_SECONDS: run the same command again, it resumes where this stopped"
  fi
  return "$status"
}

collect() {
  step "results to \$OUT"
  run_dir="$(python3 -c "from lib.core.config import load_params; from lib.core.paths import run_paths; \
print(run_paths(load_params('$params')).root)")"
  staging="$(dirname "$run_dir")/.staging-$(basename "$run_dir")"
  [ -d "$staging" ] && run_dir="$staging"  # an unfinished run: what it has done so far
  for file in steps.json report.html comparison/summary.csv comparison/per_round.csv comparison/methods.csv; do
    [ -f "$run_dir/$file" ] && cp "$run_dir/$file" "$out/" && echo "$out/$(basename "$file")"
  done
  step "CNN training speed"
  python3 benchmarks/gpu_throughput.py --run "$run_dir" | tee "$out/throughput.txt"
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "(no GPU: no steady-state probe)" | tee -a "$out/throughput.txt"
  elif [ $((call_seconds - SECONDS)) -gt 110 ]; then
    timeout --signal=INT --kill-after=10 90 python3 benchmarks/gpu_throughput.py --probe | tee -a "$out/throughput.txt"
  else
    echo "(no time left for the steady-state probe)" | tee -a "$out/throughput.txt"
  fi
}

main() {
  setup || return $?
  study; status=$?
  collect
  step "done: lib.run exited $status"
  return "$status"
}

main 2>&1 | tee "$out/gpu_study.log"
