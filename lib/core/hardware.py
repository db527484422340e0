"""The machine a step computes on, as the runner sees it without starting a Keras backend: the GPUs NVIDIA's tool
lists, the CPU's model and whether it does bfloat16 arithmetic, and the precision ``training.precision: auto``
resolves to there.

Every step's key includes them (`lib.pipeline.keys`): the same params on another accelerator, or in another
precision, give other numbers. Inside a step's kernel, `lib.core.devices.visible_devices` describes what its backend
really sees; `precision_for` is the one rule both use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_has_native_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX), per Linux's cpuinfo.

    Elsewhere (no ``/proc/cpuinfo``) the answer is False, the safe side: float32.
    """
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from Linux's cpuinfo ("unknown CPU" elsewhere)."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
    except OSError:
        return "unknown CPU"
    return found.group(1).strip() if found else "unknown CPU"


def precision_for(platform: str, compute_capability: float | None, cpu_bfloat16: bool) -> str:
    """What ``training.precision: auto`` means on a platform ("gpu", "tpu" or "cpu"):

    - a GPU of compute capability 8 or more (Ampere and later) or a TPU: mixed bfloat16, which
      has float32's range (no loss scaling) at float16's speed there;
    - an older GPU: mixed float16 (Keras scales the loss);
    - a CPU with bfloat16 arithmetic (AVX-512 BF16, AMX): mixed bfloat16, in which oneDNN runs
      the convolutions in the CPU's bfloat16 instructions (benchmarks/RESULTS.md has the gain);
    - any other CPU: float32, because there bfloat16 is emulated and the CNN trained 7-10x
      slower with it (benchmarks/RESULTS.md).
    """
    if platform == "tpu" or (platform == "gpu" and (compute_capability or 0) >= 8):
        return "mixed_bfloat16"
    if platform == "gpu":
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_bfloat16 else "float32"


def nvidia_gpus(environ=None) -> list[dict]:
    """The NVIDIA GPUs a process started now would see: ``nvidia-smi``'s list (none without it), narrowed to
    ``CUDA_VISIBLE_DEVICES`` when that is set; each as its index, name and compute capability."""
    environ = os.environ if environ is None else environ
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in listing.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3:
            try:
                capability = float(fields[2])
            except ValueError:
                capability = None
            gpus.append({"index": fields[0], "name": fields[1], "compute_capability": capability})
    named = environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        wanted = [g.strip() for g in named.split(",") if g.strip() not in ("", "-1")]
        gpus = [g for g in gpus if g["index"] in wanted]
    return gpus


def training_hardware(environ=None) -> dict:
    """What a step would compute on, in the terms that change its numbers: the GPU models (or none), the CPU's
    model and its bfloat16 arithmetic."""
    gpus = nvidia_gpus(environ)
    return {"gpus": sorted(f"{g['name']} (compute capability {g['compute_capability']})" for g in gpus),
            "cpu": cpu_model(), "cpu_bfloat16": cpu_has_native_bfloat16()}


def resolved_precision(requested: str, environ=None) -> str:
    """``training.precision`` as a step would apply it here: ``auto`` resolved by `precision_for` for the GPUs
    `nvidia_gpus` lists (their lowest compute capability) or the CPU."""
    if requested != "auto":
        return requested
    gpus = nvidia_gpus(environ)
    capabilities = [g["compute_capability"] for g in gpus if g["compute_capability"] is not None]
    return precision_for("gpu" if gpus else "cpu", min(capabilities) if capabilities else None,
                         cpu_has_native_bfloat16())
