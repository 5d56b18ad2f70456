"""The interactive loop's speed: `Editor.relight` (mapper + synthesis) at batch 1 against one
`G.synthesis` call in the same run, plus the mapper alone, `Editor.invert` (once per photo) and
a whole `Editor.edit` of the astronaut photo; the fused edit (`stylerelight edit`'s default):
its once-per-photo reconstruction and its per-edit cost; the guided edit's per-edit cost (a mapper file with a
re-render read); `Editor.relight` while a fused edit runs in another thread on `Editor.twin` (the live page's
mapper frames beside its refinement: they share the CPU).

    python benchmarks/bench_edit.py [--threads 2] [--mapper PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import timeit  # noqa: E402

from stylerelight.edit import Editor  # noqa: E402
from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mapper", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained(mapper=args.mapper)
    src = render_portrait(sample_subject(1_000_321), sample_envmap(2), Camera(yaw=10), ed.resolution, spp=16)
    lat = ed.invert(src, aligned=True)  # the default: encoder + REFINE_STEPS, edited by the mapper's change
    lat0 = ed.invert(src, aligned=True, steps=0)  # the encoder's code, mapped directly (one mapper call)
    env = sample_envmap(9, kind="studio")
    ws = lat.ws
    with torch.no_grad():
        t_syn = timeit(lambda: ed.G.synthesis(ws, noise_mode="const"), repeat=9)
    t_rel = timeit(lambda: ed.relight(lat, env, yaw=10.0, rotate_light=30.0), repeat=9)
    coeffs = ed.resolve_light(env, 30.0)
    t_map = timeit(lambda: ed.map([lat], [coeffs], [10.0], [0.0]), repeat=9)
    t_map0 = timeit(lambda: ed.map([lat0], [coeffs], [10.0], [0.0]), repeat=9)
    keep = ed.resolve_light(None, 0.0, lat)
    t_turn = timeit(lambda: ed.map([lat], [keep], [10.0], [0.0]), repeat=9)
    angle = iter(range(10**6))
    t_drag = timeit(lambda: ed.relight(lat, env, yaw=10.0, rotate_light=float(next(angle) % 360)), repeat=5)
    t_inv = timeit(lambda: ed.invert(src, aligned=True), repeat=3)
    t_inv0 = timeit(lambda: ed.invert(src, aligned=True, steps=0), repeat=3)
    import skimage.data

    photo = skimage.data.astronaut()
    t0 = time.perf_counter()
    ed.edit(photo, light=env, yaw=10.0)
    t_edit = time.perf_counter() - t0
    fused = Editor(ed.G, ed.encoder, ed.mapper, method="fused")
    t0 = time.perf_counter()
    fused._rerender_source(lat)  # the full reconstruction, its re-render and inversion: once per photo
    t_prep = time.perf_counter() - t0
    t_fused = timeit(lambda: fused.relight(lat, env, yaw=10.0, rotate_light=float(next(angle) % 360)), repeat=3,
                     min_time=0.0)
    t_guided = None
    if ed.mapper.read is not None:  # the mapper file's re-render read: its own re-render of the same reconstruction
        guided = Editor(ed.G, ed.encoder, ed.mapper, method="guided")
        guided._rerender = fused._rerender_change()
        guided._rerender_source(lat)
        t_guided = timeit(lambda: guided.relight(lat, env, yaw=10.0, rotate_light=float(next(angle) % 360)),
                          repeat=3, min_time=0.0)
    fused.light_grid = 15.0  # the page's refinement: light rotations read off grid rotations once made
    t0 = time.perf_counter()
    for r in range(0, 91, 15):
        fused.relight(lat, env, yaw=10.0, rotate_light=float(r))
    t_lgrid_make = (time.perf_counter() - t0) / 7
    between = iter(np.random.default_rng(0).uniform(0, 90, 10**4))
    t_lgrid = timeit(lambda: fused.relight(lat, env, yaw=10.0, rotate_light=float(next(between))), repeat=9)
    fused.light_grid = None
    stop = threading.Event()

    def refine_loop():  # the live page's refinement: fused edits under ever new lights, on a twin
        tw, k = ed.twin("fused"), 0
        tw._rerender = fused._rerender_change()  # the photo's reconstruction already made
        while not stop.is_set():
            tw.relight(lat, sample_envmap(500 + k), yaw=10.0)
            k += 1

    th = threading.Thread(target=refine_loop, daemon=True)
    th.start()
    time.sleep(2.0)
    t_beside = timeit(lambda: ed.relight(lat, env, yaw=10.0, rotate_light=float(next(angle) % 360)), repeat=5)
    stop.set()
    th.join()
    print(f"torch threads: {args.threads}; generator {ed.resolution}^2, {ed.G.num_ws} ws; "
          f"mapper geometry conditioning: {ed.mapper.geometry}")
    print(f"G.synthesis, batch 1:                       {t_syn * 1e3:8.2f} ms")
    print(f"mapper alone (map), batch 1:                {t_map * 1e3:8.2f} ms  (refined source under a new light: "
          f"one mapper call on three rows: the light's move, the encoder code's answer, the view change, "
          f"one condition for them; keep answers cached per latent; plus the detail carry where the light "
          f"changes, if the mapper has one); "
          f"{t_map0 * 1e3:.2f} ms (encoder source, one call)")
    print(f"mapper alone, a turn under the kept light:  {t_turn * 1e3:8.2f} ms  (refined source: the same rows, plus "
          f"the view carry, if the mapper has one)")
    print(f"Editor.relight, same light (cached):        {t_rel * 1e3:8.2f} ms  = {t_rel / t_syn:.2f}x synthesis")
    print(f"Editor.relight, new rotation every call:    {t_drag * 1e3:8.2f} ms  = {t_drag / t_syn:.2f}x synthesis")
    print(f"Editor.invert (encoder + 20 L-BFGS steps + fast reconstruction, aligned 64^2): {t_inv * 1e3:8.1f} ms; "
          f"steps=0: {t_inv0 * 1e3:.1f} ms")
    print(f"Editor.edit of the astronaut (512^2 photo: detect, align, invert, map, paste): {t_edit:.2f} s")
    print(f"fused edit: {t_prep:.2f} s once per photo (full reconstruction, re-render, inversion), then "
          f"{t_fused:.2f} s per edit (a re-render, its 20-step inversion, the mapper) = {t_fused / t_rel:.0f}x relight")
    print(f"fused edit on a 15-deg light grid (Editor.light_grid): {t_lgrid_make:.2f} s per grid rotation (once per "
          f"photo, env map and view), then {t_lgrid * 1e3:.2f} ms per rotation between them = {t_lgrid / t_drag:.2f}x "
          f"the mapper's relight")
    print(f"Editor.relight, new rotation, beside a fused edit in another thread: {t_beside * 1e3:8.2f} ms "
          f"= {t_beside / t_drag:.2f}x alone (the live page's mapper frames while it refines)")
    if t_guided is not None:
        print(f"guided edit (the mapper's re-render read; {ed.mapper.read.steps} steps on its re-renders): "
              f"{t_guided:.2f} s per edit = {t_guided / t_rel:.0f}x relight, {t_guided / t_fused:.2f}x the fused edit")


if __name__ == "__main__":
    main()
