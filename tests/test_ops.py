"""stylegan2_ops: compiled kernels against the readable reference, gradients, build."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import stylegan2_ops as ops
from stylegan2_ops import _build

compiled_ok = _build.status()["impl"] == "compiled"
needs_compiled = pytest.mark.skipif(not compiled_ok, reason="compiled ops did not build here")

ACTS = list(ops.activation_funcs)


def _filters():
    return {
        "1x1": ops.setup_filter([1]),
        "[1,3,3,1] 2-D": ops.setup_filter([1, 3, 3, 1]),
        "odd [1,2,1] 2-D": ops.setup_filter([1, 2, 1]),
        "separable 8-tap": ops.setup_filter([1, 3, 3, 1, 1, 3, 3, 1]),
        "random 3x5": torch.randn(3, 5, generator=torch.Generator().manual_seed(1)),
    }


@needs_compiled
@pytest.mark.parametrize("fname", list(_filters()))
def test_upfirdn2d_compiled_equals_ref(fname):
    f = _filters()[fname].double()
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = 0
    for up, down in itertools.product([1, 2, 4], [1, 2, 4]):
        for pad in [0, [1, 2], [1, 2, -1, 3], [3, -2, 0, 1]]:
            for flip, gain in [(False, 1.0), (True, 2.5)]:
                try:
                    ref = ops.upfirdn2d(x, f, up, down, pad, flip, gain, impl="ref")
                except RuntimeError:  # padding leaves nothing: not a valid case for either
                    continue
                if ref.numel() == 0:
                    continue
                out = ops.upfirdn2d(x, f, up, down, pad, flip, gain, impl="compiled")
                assert out.shape == ref.shape
                assert (out - ref).abs().max() < 1e-9, (up, down, pad, flip)
                n += 1
    assert n > 50


@needs_compiled
def test_upfirdn2d_anisotropic_and_layouts():
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 4, 10, 12, dtype=torch.float64)
    for xin in (x, x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3),
                x[:, :, ::2, 1:]):
        for up, down in [([2, 1], [1, 2]), ([1, 3], [2, 1])]:
            ref = ops.upfirdn2d(xin, f, up, down, [1, 2, 0, 1], impl="ref")
            out = ops.upfirdn2d(xin, f, up, down, [1, 2, 0, 1], impl="compiled")
            assert (out - ref).abs().max() < 1e-9


@needs_compiled
def test_upfirdn2d_float32_close():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 8, 16, 16)
    assert torch.allclose(ops.upsample2d(x, f, impl="compiled"), ops.upsample2d(x, f, impl="ref"), atol=1e-5)
    assert torch.allclose(ops.downsample2d(x, f, impl="compiled"), ops.downsample2d(x, f, impl="ref"),
                          atol=1e-5)


def test_upsample_downsample_preserve_constants():
    """Physical invariant: a normalised low-pass filter keeps a constant image constant."""
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 3.0)
    for impl in ("ref", "compiled") if compiled_ok else ("ref",):
        up = ops.upsample2d(x, f, impl=impl)
        down = ops.downsample2d(x, f, impl=impl)
        assert up.shape[-1] == 16 and down.shape[-1] == 4
        assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
        assert torch.allclose(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_upfirdn2d_ref_matches_direct_sum():
    """The reference against a literal triple loop of the definition."""
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64)
    f = torch.randn(3, 2, dtype=torch.float64)
    up, down, (px0, px1, py0, py1) = 2, 2, (1, 2, 2, 0)
    out = ops.upfirdn2d(x, f, up=up, down=down, padding=[px0, px1, py0, py1], impl="ref")
    zu = torch.zeros(4 * up, 5 * up, dtype=torch.float64)
    zu[::up, ::up] = x[0, 0]
    zp = torch.nn.functional.pad(zu, [px0, px1, py0, py1])
    fk = f.flip([0, 1])
    oh, ow = (zp.shape[0] - 3) // down + 1, (zp.shape[1] - 2) // down + 1
    expect = torch.zeros(oh, ow, dtype=torch.float64)
    for oy in range(oh):
        for ox in range(ow):
            expect[oy, ox] = (zp[oy * down: oy * down + 3, ox * down: ox * down + 2] * fk).sum()
    assert torch.allclose(out[0, 0], expect, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_compiled_equals_ref(act):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64, generator=g) * 3
    b = torch.randn(5, dtype=torch.float64, generator=g)
    for kw in [{}, dict(clamp=1.2), dict(gain=0.7, alpha=0.1), dict(clamp=0.5, gain=3.0)]:
        for xin in (x, x.to(memory_format=torch.channels_last), x.transpose(1, 3)):
            bb = b if xin.shape[1] == 5 else torch.randn(xin.shape[1], dtype=torch.float64)
            ref = ops.bias_act(xin, bb, act=act, impl="ref", **kw)
            out = ops.bias_act(xin, bb, act=act, impl="compiled", **kw)
            assert (out - ref).abs().max() < 1e-9
        # other dims, no bias, 2-D
        ref = ops.bias_act(x, None, act=act, impl="ref", **kw)
        assert (ops.bias_act(x, None, act=act, impl="compiled", **kw) - ref).abs().max() < 1e-9
        b6 = torch.randn(6, dtype=torch.float64, generator=g)
        ref = ops.bias_act(x, b6, dim=2, act=act, impl="ref", **kw)
        assert (ops.bias_act(x, b6, dim=2, act=act, impl="compiled", **kw) - ref).abs().max() < 1e-9


@needs_compiled
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_backward_matches_ref(act):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 4, 5, 5, dtype=torch.float64, generator=g) * 2
    b0 = torch.randn(4, dtype=torch.float64, generator=g)
    grads = {}
    for impl in ("ref", "compiled"):
        x, b = x0.clone().requires_grad_(), b0.clone().requires_grad_()
        y = ops.bias_act(x, b, act=act, clamp=1.5, gain=1.3, impl=impl)
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        gx, gb = torch.autograd.grad((y.square() * w).sum(), [x, b], create_graph=True)
        ggx, ggb = torch.autograd.grad((gx.square().sum() + gb.sum()), [x, b])
        grads[impl] = [gx, gb, ggx, ggb]
    for r, c in zip(grads["ref"], grads["compiled"], strict=True):
        assert (r - c).abs().max() < 1e-9


@needs_compiled
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_gradcheck(act):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for clamp in (None, 1.0):
        def fn(x, b, clamp=clamp):
            return ops.bias_act(x * 2, b, act=act, clamp=clamp, gain=1.3, impl="compiled")
        assert gradcheck(fn, (x, b))
        assert gradgradcheck(fn, (x, b))


@needs_compiled
def test_upfirdn2d_gradcheck():
    x = torch.randn(1, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    for fname, f in _filters().items():
        f = f.double()
        for up, down, pad in [(2, 1, [2, 1]), (1, 2, 1), (2, 2, [1, 2, -1, 3]), (4, 1, [3, 0])]:
            def fn(x, f=f, up=up, down=down, pad=pad):
                return ops.upfirdn2d(x, f, up, down, pad, gain=1.7, impl="compiled")
            assert gradcheck(fn, (x,)), fname
            assert gradgradcheck(fn, (x,)), fname


def test_impl_env_forces_ref(monkeypatch):
    monkeypatch.setenv("STYLEGAN2_OPS", "ref")
    assert _build.choose_impl(None, torch.zeros(1)) == "ref"
    assert ops.status()["impl"] == "ref"


def test_bad_arguments():
    with pytest.raises(ValueError):
        ops.bias_act(torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(ValueError):
        ops.bias_act(torch.zeros(2, 3), act="nope")
    with pytest.raises(ValueError):
        ops.upfirdn2d(torch.zeros(2, 3, 4), None)
    with pytest.raises(ValueError):
        ops.upfirdn2d(torch.zeros(1, 1, 4, 4), None, padding=[1, 2, 3])
    with pytest.raises(ValueError):
        ops.bias_act(torch.zeros(2), impl="fast")


def test_import_never_fails_without_compiler(tmp_path):
    """No compiler: importing and calling works, with one warning and the reference path."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import stylegan2_ops as ops\n"
        "    f = ops.setup_filter([1,3,3,1])\n"
        "    y = ops.upsample2d(torch.ones(1,1,4,4), f)\n"
        "    z = ops.bias_act(torch.ones(2,3), act='lrelu')\n"
        "msgs = [str(x.message) for x in w if 'stylegan2_ops' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert ops.status()['impl'] == 'ref'\n"
        "print('OK', msgs[0])\n"
    )
    env = dict(os.environ, CXX="/nonexistent/c++", CC="/nonexistent/cc",
               STYLEGAN2_OPS_CACHE=str(tmp_path / "cache"), PATH="/usr/bin:/bin")
    env.pop("STYLEGAN2_OPS", None)
    r = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK" in r.stdout and "reference" in r.stdout


def test_two_processes_building_at_once(tmp_path):
    """Two fresh processes build into one empty cache at the same time: both get working ops."""
    code = ("import torch, stylegan2_ops as ops\n"
            "x = torch.randn(2, 3, 8, 8, dtype=torch.float64)\n"
            "f = ops.setup_filter([1, 3, 3, 1]).double()\n"
            "d = (ops.upsample2d(x, f, impl='compiled') - ops.upsample2d(x, f, impl='ref')).abs().max()\n"
            "assert d < 1e-12 and ops.status()['impl'] == 'compiled'\n"
            "print('OK')\n")
    env = dict(os.environ, STYLEGAN2_OPS_CACHE=str(tmp_path / "cache"))
    env.pop("STYLEGAN2_OPS", None)
    procs = [subprocess.Popen([os.sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "OK" in out, err[-2000:]


def test_cuda_sources_compile_with_nvcc():
    """The CUDA kernels compile (to an object file) wherever nvcc exists, GPU or not."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc")
                                    else None)
    if nvcc is None:
        pytest.skip("nvcc not found: CUDA sources not compiled")
    from torch.utils import cpp_extension

    src = Path(ops.__file__).parent / "csrc"
    key = hashlib.sha256(b"".join((src / n).read_bytes() for n in ("ops_cuda.cu", "ops_math.h"))
                         + torch.__version__.encode()).hexdigest()[:16]
    out = Path(os.path.expanduser("~/.cache/stylegan2_ops")) / f"nvcc-check-{key}.o"
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    inc = cpp_extension.include_paths(device_type="cuda") if "device_type" in \
        cpp_extension.include_paths.__code__.co_varnames else cpp_extension.include_paths(cuda=True)
    import sysconfig

    cmd = [nvcc, "-c", str(src / "ops_cuda.cu"), "-o", str(out) + ".tmp", "-std=c++20",
           "--expt-relaxed-constexpr", "-gencode=arch=compute_90,code=sm_90", "-O2",
           "-DTORCH_EXTENSION_NAME=check", "-D_GLIBCXX_USE_CXX11_ABI=1", "-Xcompiler", "-fPIC",
           f"-I{sysconfig.get_paths()['include']}", f"-I{src}"] + [
               f"-I{p}" for p in inc + _build.cuda_library_includes()]
    with warnings.catch_warnings():
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    os.replace(str(out) + ".tmp", out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_kernels_match_reference():
    """The same kernels on CUDA tensors: float64 to 1e-9, half within half precision."""
    if not _build.status().get("cuda"):
        pytest.fail("a GPU is present but the CUDA kernels did not build: " + str(_build.status()))
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, generator=g).to(dev)
    for fname, f in _filters().items():
        f = f.to(dev)
        for up, down, pad in [(1, 1, 0), (2, 1, [2, 1]), (1, 2, 1), (2, 2, [1, 2, -1, 3]), (4, 1, [3, 0])]:
            ref = ops.upfirdn2d(x, f.double(), up, down, pad, impl="ref")
            out = ops.upfirdn2d(x, f.double(), up, down, pad, impl="compiled")
            assert (out - ref).abs().max() < 1e-9, fname
            xh = x.half()
            outh = ops.upfirdn2d(xh, f, up, down, pad, impl="compiled")
            assert outh.dtype == torch.float16 and (outh.double() - ref).abs().max() < 2e-2
    b = torch.randn(4, dtype=torch.float64, generator=g).to(dev)
    for act in ACTS:
        ref = ops.bias_act(x * 3, b, act=act, clamp=1.5, impl="ref")
        out = ops.bias_act(x * 3, b, act=act, clamp=1.5, impl="compiled")
        assert (out - ref).abs().max() < 1e-9, act
        xg, bg = x[:1, :, :3, :3].clone().requires_grad_(), b.clone().requires_grad_()
        assert gradcheck(lambda a, c, act=act: ops.bias_act(a, c, act=act, clamp=1.5, impl="compiled"), (xg, bg))
