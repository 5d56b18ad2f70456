"""Pick a Mitsuba 3 variant that works on this machine.

Dr.Jit's LLVM backend crashes with LLVM 14/15, so we look for LLVM >= 17 ourselves and set
`DRJIT_LIBLLVM_PATH` before Mitsuba is imported; without it, forward rendering falls back to
`scalar_rgb` with one warning.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import threading
import warnings

_MIN_LLVM = 17
_chosen: str | None = None
# One Mitsuba scene build and render at a time in a process: two threads rendering at once crashed
# the LLVM backend (a segfault in the test suite: the live page's background refinement in the
# server's thread beside a render in the test's own). Each render is itself parallel across cores.
MITSUBA_LOCK = threading.RLock()


def one_at_a_time(fn):
    """Decorator: `fn` (which builds or renders Mitsuba scenes) runs under MITSUBA_LOCK."""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with MITSUBA_LOCK:
            return fn(*args, **kwargs)
    return locked


def find_libllvm() -> str | None:
    """Path of the newest usable libLLVM (>= 17), honouring DRJIT_LIBLLVM_PATH when set."""
    env = os.environ.get("DRJIT_LIBLLVM_PATH")
    if env:
        return env if os.path.exists(env) else None
    pats = ["/usr/lib/x86_64-linux-gnu/libLLVM*.so*", "/usr/lib/aarch64-linux-gnu/libLLVM*.so*",
            "/usr/lib/llvm-*/lib/libLLVM*.so*", "/usr/local/lib/libLLVM*.so*"]
    best: tuple[int, str] | None = None
    for pat in pats:
        for p in glob.glob(pat):
            m = re.search(r"libLLVM[-.](?:so\.)?(\d+)", os.path.basename(p))
            if m and int(m.group(1)) >= _MIN_LLVM and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), p)
    return best[1] if best else None


def set_variant(prefer: str | None = None) -> str:
    """Select and return the Mitsuba variant: cuda_ad_rgb on a GPU, llvm_ad_rgb, else scalar_rgb."""
    global _chosen
    if _chosen is not None and prefer in (None, _chosen):
        return _chosen
    lib = find_libllvm()
    if lib and "DRJIT_LIBLLVM_PATH" not in os.environ:
        os.environ["DRJIT_LIBLLVM_PATH"] = lib
    import mitsuba as mi

    order = [prefer] if prefer else []
    try:
        import torch

        if torch.cuda.is_available():
            order.append("cuda_ad_rgb")
    except ImportError:
        pass
    order += ["llvm_ad_rgb", "scalar_rgb"]
    last_err = None
    for v in order:
        if v.startswith("llvm") and lib is None:
            last_err = "libLLVM >= 17 not found (apt-get install libllvm19)"
            continue
        try:
            mi.set_variant(v)
            mi.set_log_level(mi.LogLevel.Error)  # e.g. samplers rounding sample counts
            if v == "scalar_rgb" and last_err:
                warnings.warn(f"Mitsuba falls back to scalar_rgb (slow): {last_err}", stacklevel=2)
            _chosen = v
            return v
        except Exception as e:  # noqa: BLE001 - try the next variant
            last_err = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"no Mitsuba variant works here ({last_err}); run `stylerelight doctor`")
