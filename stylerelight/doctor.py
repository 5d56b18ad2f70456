"""`stylerelight doctor`: what is installed, what works, and what to do about what does not."""

from __future__ import annotations

import importlib.util
import os


def _check(name: str, fn) -> tuple[str, bool, str]:
    try:
        ok, msg = fn()
    except Exception as e:  # noqa: BLE001 - a doctor reports every failure, never raises
        ok, msg = False, f"{type(e).__name__}: {e}"
    return name, ok, msg


def _torch():
    import torch

    cuda = torch.cuda.is_available()
    gpu = f"available: {torch.cuda.get_device_name(0)}" if cuda else "not available (CPU only)"
    return True, f"torch {torch.__version__}, CUDA {gpu}"


def _ops():
    import stylegan2_ops

    st = stylegan2_ops.status()
    if st["impl"] == "compiled":
        return True, f"compiled ({'CPU + CUDA' if st.get('cuda') else 'CPU'}) cached in {st['cache']}"
    return False, (f"reference ops in use: {st['reason']}. Install g++ (and nvcc for CUDA) "
                   "and unset STYLEGAN2_OPS")


def _mitsuba():
    if importlib.util.find_spec("mitsuba") is None:
        return False, "mitsuba not installed: pip install mitsuba"
    from .synth.mitsuba_setup import find_libllvm

    lib = find_libllvm()
    import mitsuba as mi

    variants = mi.variants()
    if lib is None:
        return False, (f"mitsuba {mi.__version__}; libLLVM not found, so only scalar_rgb works: "
                       "apt-get install libllvm19 (or set DRJIT_LIBLLVM_PATH)")
    return True, f"mitsuba {mi.__version__}, LLVM {lib}, variants {', '.join(variants)}"


def _dlib():
    from .align import landmark_model_path

    if importlib.util.find_spec("dlib") is None:
        return False, "dlib not installed: pip install dlib-bin"
    p = landmark_model_path()
    if p is None:
        return False, "68-landmark model not found: pip install face-recognition-models"
    return True, f"dlib landmark model {p}"


def _lpips():
    from .invert.losses import lpips_weights_path

    if importlib.util.find_spec("lpips") is None:
        return False, "lpips not installed: pip install lpips"
    p = lpips_weights_path()
    if p is None:
        return False, ("VGG16 backbone weights not in the torch hub cache; inversion uses the "
                       "offline fallback loss. Copy vgg16-397923af.pth into "
                       "$TORCH_HOME/hub/checkpoints to enable LPIPS")
    return True, f"VGG16 backbone {p}"


def run_checks() -> list[tuple[str, bool, str]]:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    checks = [("torch", _torch), ("compiled ops", _ops), ("mitsuba", _mitsuba),
              ("dlib landmarks", _dlib), ("lpips backbone", _lpips)]
    return [_check(n, f) for n, f in checks]
