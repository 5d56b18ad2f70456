"""A non-editable install carries the bundled models and finds them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_finds_bundled_models(tmp_path):
    wheel_dir, prefix = tmp_path / "wheel", tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheel_dir)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheel_dir.glob("stylerelight-*.whl")
    # --ignore-installed: never touch the environment's own (editable) install
    subprocess.run([*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    (site,) = prefix.glob("lib/python*/site-packages")
    code = ("import stylerelight, stylerelight.bundled as b; "
            "print(stylerelight.__file__); print(b.bundled(b.GENERATOR)); print(b.bundled(b.ENCODER)); "
            "print(b.bundled('lightstage_recon.pt')); print(b.bundled(b.MAPPER)); "
            "import stylerelight.web.app as w; print(w.STATIC / 'index.html'); print(w.STATIC / 'samples')")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    module, generator, encoder, recon, mapper, page, samples = r.stdout.split()
    assert Path(module).is_relative_to(prefix)  # the installed copy, not this checkout
    assert Path(generator).is_relative_to(prefix) and Path(generator).is_file()
    assert Path(encoder).is_relative_to(prefix) and Path(encoder).is_file()
    assert Path(recon).is_relative_to(prefix) and Path(recon).is_file()
    assert Path(mapper).is_relative_to(prefix) and Path(mapper).is_file()
    assert Path(page).is_file() and len(list(Path(samples).glob("*.png"))) == 3  # the page is package data
