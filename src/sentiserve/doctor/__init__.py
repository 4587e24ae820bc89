"""``sentiserve doctor``: the tutorial's manual GPU checks, made one command.

Each check says pass, warn or fail, what it found, and the fix. A machine without an NVIDIA
GPU is a valid machine (the CPU path is the default): the GPU checks then say so and the
command exits 0; it exits 1 only when a GPU is there but cannot be used.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:26.02-py3"
TRITON_MIN_DRIVER = 575
"""Triton 26.02 ships CUDA 13.1: NVIDIA drivers >= 575 run it natively; data-center GPUs on
470.57+, 525.85+, 535.86+ or 545.23+ through CUDA forward compatibility (its release
notes). The check passes at >= 575 and warns on those older data-center branches."""
TRITON_COMPAT_BRANCHES = (470, 525, 535, 545)
BUILD_DISK_GB = 6.0
"""Free disk the default build needs: the base model, three ONNX variants, checkpoints."""
MIN_COMPUTE_CAPABILITY = (6, 0)
"""Current PyTorch wheels need compute capability 6.0+; Triton 26.02 needs 7.5+ (T4: 7.5)."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    """pass, warn, fail or skip."""
    found: str
    fix: str = ""


Probe = Callable[[], Check]


def _run(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _nvidia_smi() -> list[dict[str, str]]:
    out = _run(
        "nvidia-smi",
        "--query-gpu=name,driver_version,memory.total,compute_cap",
        "--format=csv,noheader,nounits",
    )
    if not out:
        return []
    keys = ("name", "driver", "memory_mib", "compute_cap")
    return [
        dict(zip(keys, (p.strip() for p in line.split(",")), strict=False))
        for line in out.splitlines()
    ]


def gpu_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or bool(_nvidia_smi())


def check_driver() -> Check:
    gpus = _nvidia_smi()
    if not gpus:
        if Path("/proc/driver/nvidia/version").exists():
            return Check(
                "NVIDIA driver",
                "fail",
                "driver loaded but nvidia-smi does not answer",
                "reinstall the driver utilities (nvidia-utils) matching the driver",
            )
        return Check(
            "NVIDIA driver",
            "skip",
            "no NVIDIA GPU on this machine",
            "none needed: sentiserve serves on the CPU (int8 ONNX)",
        )
    return Check("NVIDIA driver", "pass", f"{gpus[0]['driver']} ({len(gpus)} GPU)")


def check_gpu_model() -> Check:
    gpus = _nvidia_smi()
    if not gpus:
        return Check("GPU", "skip", "no NVIDIA GPU")
    gpu = gpus[0]
    try:
        major, minor = (int(x) for x in gpu.get("compute_cap", "0.0").split("."))
    except ValueError:
        major, minor = 0, 0
    found = (
        f"{gpu['name']}, {int(float(gpu.get('memory_mib', 0))) // 1024} GiB, "
        f"compute capability {major}.{minor}"
    )
    if (major, minor) < MIN_COMPUTE_CAPABILITY:
        return Check("GPU", "fail", found, "compute capability 6.0+ is needed (T4, A10, A100...)")
    return Check("GPU", "pass", found)


def check_torch_cuda() -> Check:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return Check(
            "PyTorch CUDA",
            "warn",
            "PyTorch not installed",
            "pip install torch (a CUDA build) to serve the torch engine on a GPU",
        )
    version = torch.__version__
    if not torch.cuda.is_available():
        status = "fail" if gpu_present() else "skip"
        fix = (
            "install a CUDA build of PyTorch matching the driver (pip install torch)"
            if status == "fail"
            else ""
        )
        return Check("PyTorch CUDA", status, f"torch {version}, CUDA unavailable", fix)
    runtime = torch.version.cuda
    return Check(
        "PyTorch CUDA", "pass", f"torch {version}, CUDA {runtime}, {torch.cuda.get_device_name(0)}"
    )


def check_cudnn() -> Check:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return Check("cuDNN", "skip", "PyTorch not installed")
    if not torch.cuda.is_available():
        return Check("cuDNN", "skip", "no CUDA device")
    version = torch.backends.cudnn.version()
    if not version:
        return Check(
            "cuDNN",
            "warn",
            "cuDNN not found by PyTorch",
            "the PyTorch CUDA wheels bundle cuDNN; reinstall torch",
        )
    return Check("cuDNN", "pass", str(version))


def check_onnxruntime() -> Check:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return Check("ONNX Runtime", "fail", "not installed", "pip install onnxruntime")
    providers = ort.get_available_providers()
    found = f"{ort.__version__}: {', '.join(providers)}"
    if gpu_present() and "CUDAExecutionProvider" not in providers:
        return Check(
            "ONNX Runtime",
            "warn",
            found,
            "for ONNX on the GPU: pip install onnxruntime-gpu (instead of onnxruntime); "
            "without it the GPU serves the torch engine",
        )
    return Check("ONNX Runtime", "pass", found)


def check_tensorrt() -> Check:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        status = "warn" if gpu_present() else "skip"
        return Check(
            "TensorRT",
            status,
            "not installed",
            "pip install tensorrt for TensorRT plans (optional; Triton's image has it)"
            if status == "warn"
            else "",
        )
    return Check("TensorRT", "pass", trt.__version__)


def check_triton_driver() -> Check:
    gpus = _nvidia_smi()
    if not gpus:
        return Check(f"driver for {TRITON_IMAGE}", "skip", "no NVIDIA GPU")
    try:
        major = int(gpus[0]["driver"].split(".")[0])
    except (KeyError, ValueError):
        return Check(f"driver for {TRITON_IMAGE}", "warn", "driver version unreadable")
    if major >= TRITON_MIN_DRIVER:
        return Check(f"driver for {TRITON_IMAGE}", "pass", f"driver {major} >= {TRITON_MIN_DRIVER}")
    if major in TRITON_COMPAT_BRANCHES:
        return Check(
            f"driver for {TRITON_IMAGE}",
            "warn",
            f"driver {major}: data-center GPUs only, through CUDA forward compatibility",
            f"use a driver >= {TRITON_MIN_DRIVER} (the EKS GPU AMI's is) or an older Triton image",
        )
    return Check(
        f"driver for {TRITON_IMAGE}",
        "fail",
        f"driver {major} is too old",
        f"upgrade the NVIDIA driver to >= {TRITON_MIN_DRIVER}",
    )


def check_disk(path: Path = Path(".")) -> Check:
    free = shutil.disk_usage(path).free / 1e9
    found = f"{free:.1f} GB free in {path.resolve()}"
    if free < BUILD_DISK_GB:
        return Check(
            "disk for the build",
            "warn",
            found,
            f"the default build needs about {BUILD_DISK_GB:g} GB; free some space",
        )
    return Check("disk for the build", "pass", found)


CHECKS: tuple[Probe, ...] = (
    check_driver,
    check_gpu_model,
    check_torch_cuda,
    check_cudnn,
    check_onnxruntime,
    check_tensorrt,
    check_triton_driver,
    check_disk,
)


def run_checks(checks: tuple[Probe, ...] = CHECKS) -> list[Check]:
    results = []
    for probe in checks:
        try:
            results.append(probe())
        except Exception as exc:  # a broken check is a finding, never a crash
            results.append(
                Check(probe.__name__.removeprefix("check_"), "fail", f"{type(exc).__name__}: {exc}")
            )
    return results


def as_dicts(results: list[Check]) -> list[dict[str, str]]:
    return [asdict(r) for r in results]
