"""JIT build of the compiled ops, and the choice between compiled and reference paths.

The build never breaks an import: any failure is reported once as a warning and the
pure-PyTorch reference is used instead. Builds are cached in a folder keyed by the hash of the
sources, the torch version and the flags, and guarded by a file lock so that two processes
building at once share one result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch

_CSRC = Path(__file__).with_name("csrc")
_SOURCES_CPU = ["ops_cpu.cpp"]
_SOURCES_CUDA = ["ops_cuda.cu"]
_HEADERS = ["ops_math.h"]
def _simd_flags() -> list[str]:
    """AVX2/FMA when this CPU has them (the build cache is keyed by flags, so it stays safe)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


_CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math", *_simd_flags()]  # lets selects vectorise
_LD_FLAGS = ["-fopenmp"]
_CUDA_FLAGS = ["-O3", "--use_fast_math"]

_state: dict = {"ext": None, "error": None, "warned": False, "cuda": False}


def _want_cuda() -> bool:
    if not torch.cuda.is_available():
        return False
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    return cpp_extension.CUDA_HOME is not None and Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists()


def _cache_dir(with_cuda: bool) -> Path:
    h = hashlib.sha256()
    for name in _SOURCES_CPU + _SOURCES_CUDA + _HEADERS:
        h.update(name.encode())
        h.update((_CSRC / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(_CXX_FLAGS + _CUDA_FLAGS + [str(with_cuda)]).encode())
    root = os.environ.get("STYLEGAN2_OPS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "stylegan2_ops")
    return Path(root) / h.hexdigest()[:16]


def cuda_library_includes() -> list[str]:
    """Headers of pip's nvidia-* wheels (cuSPARSE, cuBLAS...), which ATen's CUDA headers include
    and a minimal CUDA toolkit may lack."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    return sorted(str(p) for r in roots for p in Path(r).glob("*/include") if (p / "cusparse.h").exists())


def load_extension():
    """Build (once) and return the compiled module; raise RuntimeError if it cannot build."""
    if os.path.exists("/usr/local/cuda/bin/nvcc"):  # else torch guesses a CUDA home without lib64
        os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    if _state["ext"] is not None:
        return _state["ext"]
    if _state["error"] is not None:
        raise RuntimeError(_state["error"])
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # CUDA-home guess
        from torch.utils import cpp_extension

        with_cuda = _want_cuda()
        build_dir = _cache_dir(with_cuda)
        build_dir.mkdir(parents=True, exist_ok=True)
        sources = [str(_CSRC / s) for s in _SOURCES_CPU + (_SOURCES_CUDA if with_cuda else [])]
        if not any(build_dir.glob("*.so")):
            import sys

            print(f"stylegan2_ops: compiling the {'CPU+CUDA' if with_cuda else 'CPU'} ops once "
                  f"(about a minute); cached in {build_dir}", file=sys.stderr)
        with _FileLock(build_dir / "build.lock"):
            ext = cpp_extension.load(
                name="stylegan2_ops_ext" + ("_cuda" if with_cuda else ""),
                sources=sources,
                extra_cflags=_CXX_FLAGS + (["-DWITH_CUDA"] if with_cuda else []),
                extra_cuda_cflags=_CUDA_FLAGS,
                extra_ldflags=_LD_FLAGS,
                extra_include_paths=[str(_CSRC)] + (cuda_library_includes() if with_cuda else []),
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                verbose=False,
            )
        _state["ext"], _state["cuda"] = ext, with_cuda
        return ext
    except Exception as e:  # noqa: BLE001 - any build failure means: use the reference path
        lines = str(e).strip().splitlines() or [type(e).__name__]
        first = next((ln for ln in lines if "error" in ln.lower() and ":" in ln), lines[0])[:300]
        _state["error"] = f"stylegan2_ops: compiled ops unavailable ({first})"
        raise RuntimeError(_state["error"]) from e


def choose_impl(impl: str | None, x: torch.Tensor) -> str:
    """Resolve impl=None/'ref'/'compiled' for tensor `x`, warning once on fallback."""
    if impl not in (None, "ref", "compiled"):
        raise ValueError(f"impl must be None, 'ref' or 'compiled', got {impl!r}")
    if impl == "ref" or os.environ.get("STYLEGAN2_OPS", "").lower() == "ref":
        return "ref"
    if x.dtype not in (torch.float32, torch.float64) and not (x.is_cuda and x.dtype == torch.float16):
        if impl == "compiled":
            raise TypeError(f"compiled ops support float32/float64 (and half on CUDA), not {x.dtype}")
        return "ref"
    try:
        load_extension()
    except RuntimeError as e:
        if impl == "compiled":
            raise
        if not _state["warned"]:
            warnings.warn(f"{e}; using the slower pure-PyTorch reference ops", stacklevel=3)
            _state["warned"] = True
        return "ref"
    if x.is_cuda and not _state["cuda"]:
        if impl == "compiled":
            raise RuntimeError("stylegan2_ops: CUDA kernels were not built (no nvcc or no CUDA torch)")
        return "ref"
    return "compiled"


def status() -> dict:
    """What `stylerelight doctor` reports: the build state without forcing a failing build twice."""
    if os.environ.get("STYLEGAN2_OPS", "").lower() == "ref":
        return {"impl": "ref", "reason": "STYLEGAN2_OPS=ref"}
    try:
        load_extension()
        return {"impl": "compiled", "cuda": _state["cuda"], "cache": str(_cache_dir(_state["cuda"]))}
    except RuntimeError as e:
        return {"impl": "ref", "reason": str(e)}


class _FileLock:
    """An exclusive advisory lock (fcntl) held while one process builds."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
