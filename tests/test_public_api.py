"""The public names of DESIGN.md resolve from `import stylerelight as sr`."""

from __future__ import annotations

import subprocess
import sys


def test_design_names_resolve():
    code = (
        "import stylerelight as sr\n"
        "assert callable(sr.invert) and callable(sr.load_generator) and callable(sr.save_generator)\n"
        "assert callable(sr.lighting.load_envmap) and callable(sr.lighting.LightStage.default)\n"
        "assert callable(sr.lighting.OLATCapture.load)\n"
        "for n in ('sample_subject', 'Camera', 'render_olat', 'render_envmap', 'sample_envmap', 'render_portrait'):\n"
        "    assert callable(getattr(sr.synth, n)), n\n"
        "assert callable(sr.align.align_face) and callable(sr.align.paste_back)\n"
        "from stylerelight.invert import psnr\n"
        "import stylerelight.invert\n"
        "assert callable(sr.invert) and sr.invert.encoders.Encoder is sr.invert.Encoder\n"
        "assert callable(sr.load_encoder) and callable(sr.reconstruct) and hasattr(sr.Reconstruction, 'render')\n"
        "for n in ('from_pretrained', 'invert', 'relight', 'edit', 'edit_batch'):\n"
        "    assert callable(getattr(sr.Editor, n)), n\n"
        "assert callable(sr.mapper.load_mapper) and callable(sr.web.create_app)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
