"""The Editor: align, invert, reconstruct, map, synthesise, paste back -- one path for the CLI,
the Python API and the live page.

    ed = sr.Editor.from_pretrained()
    lat = ed.invert("photo.jpg")                       # once per photo (encoder + 20 L-BFGS steps)
    img = ed.relight(lat, light="studio.hdr", yaw=20)  # per slider move: mapper + synthesis only
    res = ed.edit("photo.jpg", light="studio.hdr", yaw=20); res.image  # the whole photo, face edited

Angles are degrees relative to the input's own view, in synth.Camera's convention: yaw > 0 turns
the camera towards the subject's left, so the edit shows more of the subject's LEFT cheek;
pitch > 0 looks down on the face. `rotate_light` turns the env map about the vertical axis.

A photo is inverted by the encoder and REFINE_STEPS L-BFGS steps (`steps=0`: the encoder alone,
~10x faster). For a mapper trained on encoder codes (the bundled one) a refined code w is edited by
the mapper's change, w + M(w, target) - M(w, keep), so that the detail the refinement recovered is
kept (`Editor.cancel_bias`); a turn under a kept light moves it by the mapper's view change of the
encoder's code. That detail was fitted under the photo's own light, so it is kept only
as far as the light stays: the edit slides to the mapper's answer for the encoder's code,
M(w_enc, target), as that answer departs from the photo -- the mapper's own move of w_enc for the
new light grows, or its image fits the photo worse than the encoder's code does (whichever says
more; the photo's true light, whatever the estimate says, moves neither) -- and is held at none
right at the source's estimate ("keep") (`Editor.light_blend`, `Editor.image_blend`;
docs/editing.md, measured in benchmarks/eval_edit.py).

`Editor.method = "rerender"` edits without the mapper: the change is the W+ difference of the
full reconstruction's ray-traced re-renders under the target and under the source's estimate
(mapper/rerender.py): seconds per edit. `Editor.method = "fused"` mixes the two codes
((1 - FUSE_MIX) mapper + FUSE_MIX re-render change): seconds per edit, the most faithful of the three
on the virtual light stage (`stylerelight edit` uses it by default; the live page keeps the mapper).
`Editor.method = "guided"` reads the two codes by the mapper file's learnt re-render read instead of
a fixed mix (`networks.RerenderRead`, `stylerelight train read`; a file without one is refused):
its re-renders are inverted with the steps its read was trained on (docs/mapper.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .invert.latent_file import Latent, alignment_dict
from .lighting import EnvMap, EnvMapError, LightStage, load_envmap
from .mapper import Edit, Mapper
from .mapper.conditioning import normalise_light

REFINE_STEPS = 20  # default refinement after the encoder (0: encoder only)
# A refined code's edit slides from "the light stays" to the mapper's answer for the encoder's code
# as the mapper's own move of the encoder's code for the light alone (RMS, in units of the w
# spread) grows from the first to the second value. Below the first the change is within the
# mapper's error on identity edits. Chosen on validation subjects (seeds 4,000,000+), not the
# eval's: docs/editing.md.
LIGHT_BLEND = (0.3, 0.4)
# ...or as the mapper's answer for the encoder's code stops fitting the photo: its PSNR against the
# crop falls this many dB (from the first to the second value) below the encoder's own
# reconstruction's. An identity edit's answer fits as well as the encoder's (within ~1.5 dB on
# validation), a relight's does not (~5-20 dB below): the sharper of the two signs. The ramp is
# wide enough that a light slider crossing it moves the code smoothly (session 14: (1.5, 3) put half
# of a slider's path into one of eight steps once the refinement got stronger) and short enough that
# a light whose answer fits 3.5 dB worse is fully changed; validation scores (1.5, 3)-(1.5, 5) the
# same within 0.03 dB (docs/editing.md).
IMAGE_BLEND = (1.5, 3.5)
KEEP_RAMP = 0.05  # the same move measured from the answer for the source's estimate, where a reaches full
# how an edit moves the code: the learnt mapper, the re-renders' W+ change, or both mixed
METHODS = ("mapper", "rerender", "fused", "guided")
# "fused": this share of the re-render change's code, the rest the mapper's edit. The two err in
# different ways (the mapper where its training pairs were sparse, the re-render where the head
# model misses the face), so their mean code is closer to the truth than either. Chosen on
# validation subjects (seeds 4,000,000+, benchmarks/fuse_sweep.py): every edit kind is within
# 0.06 dB of its best mix from 0.6 to 0.75: 1.3-1.5 dB above the mapper's edit, 0.4-0.7 above the
# re-render change (docs/editing.md).
FUSE_MIX = 0.6


class EditError(ValueError):
    """A request the Editor cannot honour; the message is one line for the user."""


@dataclass
class EditResult:
    image: np.ndarray   # uint8: the whole photo with the edited face pasted back (the crop when aligned)
    crop: np.ndarray    # uint8 [S, S, 3]: the edited aligned face
    latent: Latent      # the source's latent (ws, alignment, reconstruction)
    ws: torch.Tensor    # [1, num_ws, w_dim]: the edited code


def _is_path(x) -> bool:
    return isinstance(x, (str, Path))


class Editor:
    """A generator, its encoder, the reconstruction's fast path and a mapper, checked to belong together."""

    def __init__(self, G, encoder, mapper: Mapper, recon=None, device: str | torch.device = "cpu",
                 method: str = "mapper"):
        from .invert import check_encoder_for, encoder_hash

        self.device = torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        check_encoder_for(encoder, self.G)
        mapper.check_for(self.G)
        trained_on, this_one = mapper.info.get("encoder"), encoder_hash(encoder)
        if trained_on and trained_on != this_one:
            import warnings

            warnings.warn(f"the mapper was trained on codes of encoder {trained_on}, not of this one "
                          f"({this_one}); edits may be worse than its model card says", stacklevel=2)
        if recon is None:
            from .recon import default_cnn

            recon = default_cnn()
        self.encoder, self.mapper, self.recon = encoder.to(self.device), mapper.to(self.device), recon
        self.encoder_hash = this_one  # latents record it: a code of another encoder is not this one's own
        from .gan.io import generator_hash

        self.generator_hash = generator_hash(self.G)  # hashed once: latents are checked on every edit
        dirs = mapper.stage["directions"].double().numpy()
        self.stage = LightStage(dirs)
        self._light_cache: dict = {}
        # None: per latent, on for codes that are not the encoder's own (refined, optimised); see map()
        self.cancel_bias: bool | None = None
        # (lo, hi) light change over which a cancelled edit slides to the encoder code's direct
        # answer; falsy: never (the mapper's change alone)
        # (the mapper file's own ramps where it carries them: chosen on validation for its network)
        self.light_blend: tuple[float, float] | None = mapper.blend.get("light_blend", LIGHT_BLEND)
        # (lo, hi) dB by which the encoder code's answer fits the photo worse than the encoder's own
        # code, over which the same slide happens (whichever is further); falsy: the move alone
        self.image_blend: tuple[float, float] | None = mapper.blend.get("image_blend", IMAGE_BLEND)
        self.method = method
        self._rerender = None
        self._guide = None  # "guided": the re-render change with its read's refinement steps, when not the default
        self.turn_grid = None
        self.light_grid = None

    @property
    def turn_grid(self) -> tuple[float, float] | None:
        """(yaw, pitch) steps in degrees: the rerender, fused and guided methods read a turn between
        grid views off the re-render changes at the grid views around it (bilinear; each computed once
        per photo and light), so sweeps and view sliders cost milliseconds after the first frames.
        None (default): every turn's re-render is its own (docs/editing.md)."""
        return self._turn_grid

    @turn_grid.setter
    def turn_grid(self, grid) -> None:
        from .mapper.rerender import check_grid

        try:
            self._turn_grid = check_grid(grid)
        except ValueError as e:
            raise EditError(str(e)) from None

    @property
    def light_grid(self) -> float | None:
        """A step in degrees of `rotate_light`: the rerender, fused and guided methods read a turn of the
        light between grid rotations off the re-render changes at the two grid rotations around it
        (linear; each computed once per photo, env map and view), so a light sweep or the page's light
        slider costs milliseconds after the first frames. None (default): every rotation's re-render is
        its own (docs/editing.md)."""
        return self._light_grid

    @light_grid.setter
    def light_grid(self, step) -> None:
        from .mapper.rerender import check_light_grid

        try:
            self._light_grid = check_light_grid(step)
        except ValueError as e:
            raise EditError(str(e)) from None

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        if value not in METHODS:
            raise EditError(f"unknown edit method {value!r}; use one of {', '.join(METHODS)}")
        self._method = value

    @contextlib.contextmanager
    def using(self, method: str):
        """`with ed.using("fused"):` edits by `method` inside, by the editor's own method after."""
        before, self.method = self.method, method
        try:
            yield self
        finally:
            self._method = before

    def twin(self, method: str | None = None, turn_grid=None, light_grid=None) -> Editor:
        """Another editor on the same models and settings (blends, cancel bias), editing by `method`
        with `turn_grid` and `light_grid`, with caches of its own: e.g. the live page's refinement (fused) runs beside
        its mapper frames (each editor in one thread at a time) instead of switching one editor's method."""
        with warnings.catch_warnings():  # the encoder's mismatch, if any, was said for this editor
            warnings.simplefilter("ignore")
            out = Editor(self.G, self.encoder, self.mapper, recon=self.recon, device=self.device,
                         method=method or self.method)
        out.cancel_bias, out.light_blend, out.image_blend = self.cancel_bias, self.light_blend, self.image_blend
        out.turn_grid, out.light_grid = turn_grid, light_grid
        return out

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "cpu", checkpoint=None, encoder=None,
                        mapper=None, method: str = "mapper") -> Editor:
        """The bundled generator, reconstruction network and mapper (or the files given), with the
        encoder whose codes the mapper learned: without `encoder`, the bundled encoder file whose hash
        the mapper records (`lightstage_mapper_encoder.pt` for the bundled mapper), else the bundled
        encoder (the Editor then warns)."""
        from . import load_encoder, load_generator
        from .bundled import ENCODER, GENERATOR, MAPPER, MAPPER_ENCODER, bundled

        def need(path, name):
            p = path or bundled(name)
            if p is None:
                raise FileNotFoundError(f"the bundled {name} is missing from this install; reinstall stylerelight "
                                        "or pass the file explicitly")
            return p

        from .mapper import load_mapper

        G = load_generator(need(checkpoint, GENERATOR), device=device)
        M = load_mapper(need(mapper, MAPPER), device=device)
        if encoder is None:
            from .invert import encoder_hash

            E = None
            for path in [p for p in (bundled(MAPPER_ENCODER), bundled(ENCODER)) if p]:
                E = load_encoder(path, device=device)
                if encoder_hash(E) == M.info.get("encoder"):
                    break
            E = E or load_encoder(need(None, ENCODER), device=device)  # none bundled: one-line error
        else:
            E = load_encoder(encoder, device=device)
        return cls(G, E, M, device=device, method=method)

    @property
    def resolution(self) -> int:
        return self.G.img_resolution

    # -- inputs ----------------------------------------------------------------------------------

    def _crop(self, image, aligned: bool):
        """(uint8 crop at the generator's size, AlignedFace or None, photo or None)."""
        from PIL import Image

        from .align import align_face, load_image

        if aligned:
            crop = load_image(image)
            if crop.shape[0] != crop.shape[1]:
                raise EditError(f"an aligned crop must be square, got {crop.shape[1]}x{crop.shape[0]}; "
                                "drop --aligned to align the photo first")
            if crop.shape[0] != self.resolution:
                crop = np.asarray(Image.fromarray(crop).resize((self.resolution,) * 2, Image.LANCZOS))
            return crop, None, None
        photo = load_image(image)
        a = align_face(photo, output_size=self.resolution)
        return a.image, a, photo

    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops)).float().to(self.device) / 127.5 - 1
        return x.permute(0, 3, 1, 2)

    def invert(self, image, aligned: bool = False, steps: int = REFINE_STEPS) -> Latent:
        """A portrait -> Latent (ws, alignment, the fast reconstruction: pose, light, shape)."""
        return self.invert_batch([image], aligned, steps)[0]

    def invert_batch(self, images, aligned: bool = False, steps: int = REFINE_STEPS) -> list[Latent]:
        from .invert import invert as optimise

        crops, aligns = [], []
        for im in images:
            c, a, _ = self._crop(im, aligned)
            crops.append(c)
            aligns.append(a)
        x = self._to_tensor(np.stack(crops))
        with torch.no_grad():
            ws_enc = ws = self.encoder(x)
        if steps:
            ws = optimise(self.G, x, steps=steps, init=ws, progress=False)  # the encoder ran above
        est = self.recon.estimate(x.cpu())
        out = []
        for i, a in enumerate(aligns):
            rec = {"kind": "fast", "yaw": float(est.yaw[i]), "pitch": float(est.pitch[i]),
                   "light": torch.from_numpy(np.asarray(est.light[i], np.float32)),
                   "identity": torch.from_numpy(np.asarray(est.identity[i], np.float32)),
                   "expression": torch.from_numpy(np.asarray(est.expression[i], np.float32))}
            info = {"steps": int(steps), "encoder": self.encoder_hash,
                    "faces_found": int(a.faces_found) if a is not None else 1,
                    "crop": torch.from_numpy(crops[i].copy())}
            lat = Latent.for_generator(self.G, ws[i:i + 1], alignment=alignment_dict(a) if a else None,
                                       reconstruction=rec, info=info)
            _cache_set(lat, "_enc_ws", self.encoder, ws_enc[i:i + 1].detach())
            out.append(lat)
        return out

    def resolve_light(self, light, rotate_light: float = 0.0, source: Latent | None = None) -> torch.Tensor:
        """light (path .hdr/.exr/.npy, EnvMap, [L, 3] coefficients, or None = the source's estimate),
        turned by rotate_light degrees about +y -> [L, 3] scale-free coefficients."""
        key = (None if light is None else str(light) if _is_path(light) else id(light), float(rotate_light))
        hit = self._light_cache.get(key) if light is not None else None
        if hit is not None and (hit[0] is light or _is_path(light)):
            return hit[1]
        L = self.stage.num_lights
        original = light
        if light is None:
            if source is None or not source.reconstruction:
                raise EditError("no light given and the latent holds no reconstruction of its own light; pass a light")
            # "keep the light": the estimate of the reconstruction the method renders with (the
            # fused method's re-render keeps its own: _rerender_light)
            light = self._rerender_source(source).rec.light if self.method == "rerender" else \
                source.reconstruction["light"]
        if _is_path(light):
            light = load_light_file(Path(light), L)
        if isinstance(light, EnvMap):
            coeffs = self.stage.project(light.rotate(rotate_light) if rotate_light else light)
        else:
            coeffs = np.asarray(light.detach().cpu() if isinstance(light, torch.Tensor) else light, np.float64)
            if coeffs.shape != (L, 3):
                raise EditError(f"light coefficients must be [{L}, 3] (this mapper's light stage), "
                                f"got {list(coeffs.shape)}")
            if rotate_light:
                from .recon import light_to_envmap

                coeffs = self.stage.project(light_to_envmap(coeffs, self.stage).rotate(rotate_light))
        if not np.isfinite(coeffs).all() or (coeffs < 0).any():
            raise EditError("the light has non-finite or negative values; fix the env map or coefficients")
        if coeffs.sum() <= 0:
            raise EditError("the light is black (all zero); choose an env map with some light in it")
        out = normalise_light(torch.from_numpy(coeffs.astype(np.float32)))
        if len(self._light_cache) > 64:
            self._light_cache.clear()
        if key[0] is not None:
            self._light_cache[key] = (original, out)
        return out

    def check_angles(self, latent: Latent, yaw: float, pitch: float) -> tuple[float, float]:
        """(source yaw, source pitch) estimate; refuses targets outside the mapper's trained range.
        A face estimated outside the range can still be relit in place or turned towards it (the
        estimate is noisy near the range's edge; refusing every edit of such a photo helps no one)."""
        rec = latent.reconstruction or {}
        sy, sp = float(rec.get("yaw", 0.0)), float(rec.get("pitch", 0.0))
        ry, rp = float(self.mapper.pose_range["yaw"]), float(self.mapper.pose_range["pitch"])
        for name, src, d, r in (("yaw", sy, yaw, ry), ("pitch", sp, pitch, rp)):
            if not np.isfinite(d):
                raise EditError(f"{name} must be a number of degrees, got {d}")
            lo, hi = min(-r, src), max(r, src)
            if not lo - 1e-6 <= src + d <= hi + 1e-6:
                raise EditError(f"{name} {d:+.1f} turns the head to {src + d:+.1f} deg, outside the range the mapper "
                                f"was trained on (+-{r:.0f} deg; this face is at {src:+.1f}): use {name} in "
                                f"[{lo - src:+.1f}, {hi - src:+.1f}]")
        return sy, sp

    # -- the interactive loop --------------------------------------------------------------------

    def map(self, latents: list[Latent], lights: list[torch.Tensor], yaws, pitches, turned=None) -> torch.Tensor:
        """Edited ws [N, num_ws, w_dim] for latents with one light/yaw/pitch each. turned: per latent the
        (light, rotate_light) each light was resolved from, which `light_grid` needs (without it every
        rotation's re-render change is exact)."""
        for lat in latents:
            self._check(lat)
            self.ensure_reconstruction(lat)
        src = [self.check_angles(lat, y, p) for lat, y, p in zip(latents, yaws, pitches, strict=True)]
        if self.method == "mapper":
            return self._map(latents, lights, yaws, pitches, src)[0]
        if self.method == "guided" and self.mapper.read is None:
            raise EditError("this mapper file has no re-render read (train one with `stylerelight train read`); "
                            "use --method fused")
        from .mapper.rerender import NoFaceError

        rr = self._rerender_change()
        moved, faceless = [], torch.zeros(len(latents), dtype=torch.bool)
        with torch.no_grad():
            for i, (lat, light, y, p) in enumerate(zip(latents, lights, yaws, pitches, strict=True)):
                try:
                    change = self._change(rr, lat, light, y, p, None if turned is None else turned[i])
                except NoFaceError as e:
                    if self.method == "rerender":
                        raise
                    # fused, guided: the mapper's edit alone (the re-render of no face would move it anywhere)
                    warnings.warn(f"{e}; this edit is the mapper's alone", stacklevel=2)
                    change, faceless[i] = 0, True
                moved.append(lat.ws.to(self.device) + change)
        moved = torch.cat(moved)
        if self.method == "rerender":
            return moved
        # fused: the mix, as far as the edit changes the light (the mapper's light blend a) or the view;
        # an edit that keeps both -- up to the light estimate's error -- stays the mapper's, which gives
        # the photo's code back where the re-render change would move it by the two estimates' mismatch
        mapped, a = self._map(latents, lights, yaws, pitches, src)
        turn = torch.tensor([float(y) != 0 or float(p) != 0 for y, p in zip(yaws, pitches, strict=True)])
        g = torch.maximum(a.cpu(), turn.float()).masked_fill(faceless, 0).to(self.device)[:, None, None]
        if self.method == "fused":
            return mapped + FUSE_MIX * g * (moved - mapped)
        # guided: the mapper's read of its edit and the encoded re-render change, as far as the fused mix goes
        from .mapper.networks import read_kind

        relit = torch.tensor([not torch.equal(light.cpu(), self._fast_light(lat))
                              for lat, light in zip(latents, lights, strict=True)])
        with torch.no_grad():
            read = self.mapper.read(mapped, moved, read_kind(relit, turn).to(self.device))
        return mapped + g * (read - mapped)

    def _change(self, rr, lat: Latent, light: torch.Tensor, yaw: float, pitch: float, turned) -> torch.Tensor:
        """The re-render change of one edit: exact, or with `light_grid` and the light's (source, rotation)
        known, the linear mix of the changes at the grid rotations around that rotation."""
        src = self._rerender_source(lat)
        if self.light_grid is None or turned is None:
            return rr.change(src, self._rerender_light(lat, light), yaw, pitch)
        from .mapper.rerender import rotation_corners

        return sum(w * rr.change(src, self._rerender_light(lat, self.resolve_light(turned[0], r, lat)), yaw, pitch)
                   for r, w in rotation_corners(turned[1], self.light_grid))

    @staticmethod
    def _fast_light(lat: Latent) -> torch.Tensor:
        """The scale-free light of the latent's fast estimate: what resolve_light gives for "keep the light"."""
        return normalise_light(torch.as_tensor(np.asarray(lat.reconstruction["light"], np.float32)))

    def _rerender_light(self, lat: Latent, light: torch.Tensor) -> torch.Tensor:
        """The re-render's light for an edit: for the fused method, "keep the light" (the fast
        estimate resolve_light returned) means the full reconstruction's own estimate, as it does
        for the rerender method, so that keeping light and view leaves the re-render's code alone."""
        if self.method in ("fused", "guided"):
            if torch.equal(light.cpu(), self._fast_light(lat)):
                return self._rerender_change().source_light(self._rerender_source(lat).rec)
        return light

    def _map(self, latents: list[Latent], lights: list[torch.Tensor], yaws, pitches,
             src) -> tuple[torch.Tensor, torch.Tensor]:
        """The mapper's edit (map() with method "mapper") and [N] how far it changes the light (the
        light blend's a in [0, 1]; 1 for codes it maps directly); src: the checked source views."""
        recs = [lat.reconstruction or {} for lat in latents]
        n = len(latents)
        delta = torch.tensor([[float(y), float(p)] for y, p in zip(yaws, pitches, strict=True)])
        geo = self.mapper.geometry
        if geo and any("identity" not in r for r in recs):
            raise EditError("this mapper needs the source's reconstruction; invert the photo with the Editor")
        edit = Edit(light=torch.stack(lights), src_pose=torch.tensor(src, dtype=torch.float32), delta_pose=delta,
                    same_view=(delta.abs().sum(1) == 0).float(),
                    src_light=torch.stack([torch.as_tensor(r["light"]).float() for r in recs]) if geo else None,
                    identity=torch.stack([torch.as_tensor(r["identity"]).float() for r in recs]) if geo else None,
                    expression=torch.stack([torch.as_tensor(r["expression"]).float() for r in recs]) if geo else None)
        normals = None
        if geo:
            normals = torch.cat([self._normals(lat) for lat in latents]) if n else None
        ws = torch.cat([lat.ws for lat in latents]).to(self.device)
        edit = edit.to(self.device)
        with torch.no_grad():
            cancel = self._cancels(latents).to(self.device)
            if not cancel.any():
                return self.mapper(ws, edit, normals), torch.ones(n)
            # cancelled latents (refined codes); the others get the mapper's plain answer
            same = edit.at_source_view()
            if not self.light_blend:
                # the mapper's change alone: w + M(w, target) - M(w, keep)
                out = self.mapper(ws, edit, normals)
                moved = ws + out - self._kept(latents, "_kept", ws, same, normals)
                return torch.where(cancel[:, None, None], moved, out), torch.ones(n)
            w_enc = torch.cat([self._encoder_ws(lat) for lat in latents])
            cat = lambda *x: torch.cat(x) if x[0] is not None else None  # noqa: E731
            net = self.mapper.net  # the condition is computed once (it costs as much as the network)
            if bool(edit.same_view.all()):  # no turn: the direct answer is the light's move; no view change
                cond = self.mapper.conditioner(same, normals)
                lit = direct = net(w_enc, cond)
                out = ws if cancel.all() else net(ws, cond)
            else:
                both = Edit(**{k: cat(getattr(same, k), getattr(edit, k)) for k in edit.__dict__})
                c_same, cond = self.mapper.conditioner(both, cat(normals, normals)).split(n)
                lit, direct, out = net(torch.cat([w_enc, w_enc, ws]), torch.cat([c_same, cond, cond])).split(n)
            # how far the mapper moves the encoder's code for the light alone: from no move (the
            # photo's own light as the mapper sees it; the estimate plays no part) and from its
            # answer for the source's estimate ("keep the light": a = 0 there, ramping up within
            # KEEP_RAMP so that a light slider starting from it does not jump)
            kept = self._kept(latents, "_kept_enc", w_enc, same, normals)
            std = self.mapper.net.w_std
            lo, hi = self.light_blend
            a = ((_rms(lit - w_enc, std) - lo) / (hi - lo)).clamp(0, 1)
            keep = (_rms(lit - kept, std) / KEEP_RAMP).clamp(max=1)
            need = (a < 1) & (keep > 0)  # the fit costs a synthesis: only where it can change a
            if self.image_blend and bool(need.any()):
                lo, hi = self.image_blend
                i = need.nonzero()[:, 0]
                d = self._deficit([latents[j] for j in i.tolist()], w_enc[i], lit[i])
                a[i] = torch.maximum(a[i], ((d - lo) / (hi - lo)).clamp(0, 1))
            a = (a * keep)[:, None, None]
            # a = 0: the light stays; the refined code turned by the mapper's view change under the
            # target light, measured at the encoder's code (the codes the mapper was trained on; at
            # the refined code it carried the refinement's detail worse through large turns:
            # docs/editing.md), with the mapper's view carry (what of the refined code's own residual
            # survives the turn) if it has one. a = 1: the light changes; the mapper's answer for the
            # encoder's code.
            turned = (self.mapper.turned(ws, w_enc, direct, lit, edit, cond=cond) if bool((a < 1).any())
                      else ws + direct - lit)  # (a = 1: the turned code is not used)
            if self.mapper.carry is not None and bool((a > 0).any()):
                # the mapper's detail carry: what of the refined code's own residual survives the light
                direct = self.mapper.carried(w_enc, direct, ws, edit, cond=cond)
            moved = turned + a * (direct - turned)
            return torch.where(cancel[:, None, None], moved, out), torch.where(cancel, a.flatten(), 1.0).cpu()

    def light_move(self, latent: Latent, light=None, rotate_light: float = 0.0) -> float:
        """How far the mapper moves the encoder's code of the latent's photo for `light` alone (RMS,
        in units of the w spread). What the default edit's light blend reads (LIGHT_BLEND): on
        validation 0.05-0.27 under the photo's own light, 0.19-1.1 (median 0.56) for a relight."""
        w_enc, lit = self._encoder_answer(latent, light, rotate_light)
        return float(_rms(lit - w_enc, self.mapper.net.w_std)[0])

    def light_deficit(self, latent: Latent, light=None, rotate_light: float = 0.0) -> float:
        """How many dB worse the mapper's answer for the encoder's code under `light` fits the photo
        than the encoder's own code does (PSNR against the crop). What the default edit's light blend
        reads besides the move (IMAGE_BLEND): on validation -0.2-1.5 under the photo's own light,
        mostly > 5 for a real relight."""
        w_enc, lit = self._encoder_answer(latent, light, rotate_light)
        return float(self._deficit([latent], w_enc, lit)[0])

    def _encoder_answer(self, latent: Latent, light, rotate_light: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(the encoder's code of the latent's photo, the mapper's plain answer for it under the light
        alone): what the light blend reads."""
        self._check(latent)
        self.ensure_reconstruction(latent)
        light = self.resolve_light(light, rotate_light, latent)
        w_enc = self._encoder_ws(latent)
        enc = dataclasses.replace(latent, ws=w_enc.cpu(), info={**(latent.info or {}), "steps": 0})
        saved, self.cancel_bias = self.cancel_bias, False
        try:
            return w_enc, self._map([enc], [light], [0.0], [0.0], [self.check_angles(enc, 0.0, 0.0)])[0]
        finally:
            self.cancel_bias = saved

    def _deficit(self, latents: list[Latent], w_enc: torch.Tensor, lit: torch.Tensor) -> torch.Tensor:
        """[N] dB: PSNR of G(w_enc) minus PSNR of G(lit) against each latent's photo (its crop; for a
        latent without one, the generator's image of its code). The first term is cached, and the
        last answer's value too (a view slider moving under one light costs no synthesis)."""
        from .invert import psnr

        last = [_cache_get(lat, "_last_fit", self.mapper) for lat in latents]
        if all(c is not None and torch.equal(c[0], li) for c, li in zip(last, lit, strict=True)):
            return torch.stack([c[1] for c in last])
        refs = []
        for lat, w in zip(latents, w_enc.split(1), strict=True):
            ref = _cache_get(lat, "_photo_fit", self.encoder)
            if ref is None:
                crop = (lat.info or {}).get("crop")
                with torch.no_grad():
                    x = (self._to_tensor(np.asarray(crop, np.uint8)[None]) if crop is not None
                         else self.G.synthesis(lat.ws[:1].to(self.device), noise_mode="const"))
                    ref = (x, psnr(self.G.synthesis(w, noise_mode="const"), x))
                _cache_set(lat, "_photo_fit", self.encoder, ref)
            refs.append(ref)
        x = torch.cat([r[0] for r in refs])
        with torch.no_grad():
            d = torch.cat([r[1] for r in refs]) - psnr(self.G.synthesis(lit, noise_mode="const"), x)
        for lat, li, v in zip(latents, lit, d, strict=True):
            _cache_set(lat, "_last_fit", self.mapper, (li.clone(), v))
        return d

    def _kept(self, latents: list[Latent], name: str, ws: torch.Tensor, same: Edit,
              normals: torch.Tensor | None) -> torch.Tensor:
        """M(ws, keep): the mapper's answer to "keep the light (the source's estimate) and the view";
        it depends on the latent alone, so it is cached on it (like the normals)."""
        kept = [_cache_get(lat, name, self.mapper) for lat in latents]
        if any(k is None for k in kept):
            recs = [lat.reconstruction for lat in latents]
            keep_light = torch.stack([normalise_light(torch.as_tensor(r["light"]).float()) for r in recs])
            keep = Edit(**{**same.__dict__, "light": keep_light.to(self.device)})
            kept = list(self.mapper(ws, keep, normals).split(1))
            for lat, k in zip(latents, kept, strict=True):
                _cache_set(lat, name, self.mapper, k)
        return torch.cat(kept)

    def _encoder_ws(self, lat: Latent) -> torch.Tensor:
        """The encoder's own code of the latent's photo (kept from `invert`; else the encoder run on
        its crop, or on the generator's image of its ws; cached on the latent)."""
        ws = _cache_get(lat, "_enc_ws", self.encoder)
        if ws is None:
            crop = (lat.info or {}).get("crop")
            with torch.no_grad():
                if crop is not None:
                    x = self._to_tensor(np.asarray(crop, np.uint8)[None])
                else:
                    x = self.G.synthesis(lat.ws[:1].to(self.device), noise_mode="const")
                ws = self.encoder(x.to(self.device))
            _cache_set(lat, "_enc_ws", self.encoder, ws)
        return ws.to(self.device)

    def _cancels(self, latents: list[Latent]) -> torch.Tensor:
        """Which latents are edited by the mapper's change rather than its answer: all or none when
        cancel_bias is set; else, for a mapper trained on encoder codes (its config's
        bank_refine_steps is 0), those whose code is not this encoder's own (info "steps" > 0, or
        info "encoder" naming another encoder: `stylerelight invert` uses the best bundled encoder,
        the Editor the one its mapper learned). A mapper trained on refined codes maps every code directly."""
        if self.cancel_bias is not None:
            return torch.full((len(latents),), bool(self.cancel_bias))
        cfg = (getattr(self.mapper, "info", None) or {}).get("config") or {}
        if int(cfg.get("bank_refine_steps", 0) or 0) > 0:
            return torch.zeros(len(latents), dtype=torch.bool)
        def own(info: dict) -> bool:
            return not int(info.get("steps", 0) or 0) and info.get("encoder") in (None, self.encoder_hash)

        return torch.tensor([not own(lat.info or {}) for lat in latents])

    def _check(self, lat: Latent) -> None:
        """Latent.check with the generator's hash computed once."""
        if tuple(lat.ws.shape[1:]) != (self.G.num_ws, self.G.w_dim) or \
                lat.generator.get("hash") not in (None, self.generator_hash):
            lat.check(self.G)

    def _rerender_change(self):
        """The re-render change this editor's method uses: inversions refined by RerenderChange's
        default steps (rerender, fused), or by as many as the mapper's read was trained with (guided;
        the same object when those are the default)."""
        from .mapper.rerender import RerenderChange

        if self._rerender is None:
            self._rerender = RerenderChange(self.G, self.encoder, self.stage)
        if self.method == "guided" and self.mapper.read is not None and self.mapper.read.steps != self._rerender.steps:
            if self._guide is None or self._guide.steps != self.mapper.read.steps:
                self._guide = RerenderChange(self.G, self.encoder, self.stage, steps=self.mapper.read.steps)
            self._guide.grid = self.turn_grid  # the editor's grid, on whichever change it uses now
            return self._guide
        self._rerender.grid = self.turn_grid
        return self._rerender

    def _rerender_source(self, lat: Latent):
        """The latent's full reconstruction and re-rendered code (seconds; cached on the latent for
        its code). The photo's crop when the latent holds it, else the generator's image of its ws."""
        rr = self._rerender_change()
        slot = "_guide" if rr is self._guide else "_rerender"  # a guided read's own steps: another source code
        other_slot = "_rerender" if rr is self._guide else "_guide"
        # editors sharing the change share its source, whichever slot their method keeps it in: a second
        # preparation would render the source again, and the renderer's parallel sums are not bit-stable
        for s in (slot, other_slot):
            src = _cache_get(lat, s, rr)
            if isinstance(src, Exception):  # a crop found not to be a face: not reconstructed again
                raise src
            if src is not None:
                return src
        from .mapper.rerender import NoFaceError, SourceRender

        # the other change's source: the same reconstruction
        other = getattr(lat, other_slot, None)
        done = _cache_get(lat, other_slot, other[0]) if other is not None else None
        rec = done.rec if isinstance(done, SourceRender) else None
        crop = (lat.info or {}).get("crop")
        if crop is None:
            from .imageio import gan_to_uint8

            with torch.no_grad():
                crop = gan_to_uint8(self.G.synthesis(lat.ws[:1].to(self.device), noise_mode="const"))[0]
        try:
            src = rr.prepare(np.asarray(crop, np.uint8), rec=rec)
        except NoFaceError as e:
            _cache_set(lat, slot, rr, e)
            raise
        _cache_set(lat, slot, rr, src)
        return src

    def rerender_problem(self, latent: Latent) -> str | None:
        """Why this editor's re-render methods edited the latent by the mapper alone (its crop was
        found not to be a face: one line), or None (not found so, or not tried yet)."""
        from .mapper.rerender import NoFaceError

        rr = self._rerender_change()
        for slot in ("_rerender", "_guide"):
            found = _cache_get(latent, slot, rr)
            if isinstance(found, NoFaceError):
                return str(found).splitlines()[0]
        return None

    def _normals(self, lat: Latent) -> torch.Tensor | None:
        """The shading probe's normals of the latent's shape (None for a mapper without geometry)."""
        probe = self.mapper.conditioner.probe
        if probe is None:
            return None
        cached = _cache_get(lat, "_normals", probe)
        if cached is None:
            r, dev = lat.reconstruction, probe.mean.device
            cached = probe.normals(torch.as_tensor(r["identity"]).float()[None].to(dev),
                                   torch.as_tensor(r["expression"]).float()[None].to(dev))
            _cache_set(lat, "_normals", probe, cached)
        return cached.to(self.device)

    def ensure_reconstruction(self, lat: Latent) -> Latent:
        """A latent without a source reconstruction (e.g. from `stylerelight invert`) gets the fast
        one, read off the generator's image of its ws."""
        if lat.reconstruction and "identity" in lat.reconstruction:
            return lat
        with torch.no_grad():
            img = self.G.synthesis(lat.ws[:1].to(self.device), noise_mode="const")
        est = self.recon.estimate(img.cpu())
        lat.reconstruction = {"kind": "fast", "yaw": float(est.yaw[0]), "pitch": float(est.pitch[0]),
                              "light": torch.from_numpy(np.asarray(est.light[0], np.float32)),
                              "identity": torch.from_numpy(np.asarray(est.identity[0], np.float32)),
                              "expression": torch.from_numpy(np.asarray(est.expression[0], np.float32))}
        return lat

    def relight(self, latent: Latent, light=None, yaw: float = 0.0, pitch: float = 0.0,
                rotate_light: float = 0.0) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1]: the latent's face under `light`, turned by (yaw, pitch)."""
        if len(latent.ws) != 1:
            raise EditError("relight takes one latent per call; use edit_batch for many")
        self._check(latent)
        self.ensure_reconstruction(latent)
        lights = [self.resolve_light(light, rotate_light, latent)]
        ws = self.map([latent], lights, [yaw], [pitch], [(light, rotate_light)])
        with torch.no_grad():
            return self.G.synthesis(ws, noise_mode="const")

    # -- whole photos ----------------------------------------------------------------------------

    def edit(self, image, light=None, yaw: float = 0.0, pitch: float = 0.0, rotate_light: float = 0.0,
             aligned: bool = False, steps: int = REFINE_STEPS) -> EditResult:
        return self.edit_batch([image], light, yaw, pitch, rotate_light, aligned, steps)[0]

    def edit_batch(self, images, light=None, yaw=0.0, pitch=0.0, rotate_light=0.0, aligned: bool = False,
                   steps: int = REFINE_STEPS, batch_size: int = 16) -> list[EditResult]:
        """Many edits: `images` a list (paths, arrays, PIL images, Latents) or a folder; light and angles
        one value or one per image. Batched through encoder, mapper and generator."""
        items = _expand(images)
        n = len(items)
        per = {k: _per_image(v, n, k) for k, v in
               (("light", light), ("yaw", yaw), ("pitch", pitch), ("rotate_light", rotate_light))}
        out = []
        for i0 in range(0, n, batch_size):
            chunk = items[i0:i0 + batch_size]
            photos = [it for it in chunk if not isinstance(it, Latent)]
            lats = iter(self.invert_batch(photos, aligned, steps) if photos else [])
            latents = [it if isinstance(it, Latent) else next(lats) for it in chunk]
            for lat in latents:
                self._check(lat)
                self.ensure_reconstruction(lat)
            idx = range(i0, i0 + len(chunk))
            lights = [self.resolve_light(per["light"][i], per["rotate_light"][i], lat) for i, lat in zip(idx, latents,
                                                                                                       strict=True)]
            ws = self.map(latents, lights, [per["yaw"][i] for i in idx], [per["pitch"][i] for i in idx],
                          [(per["light"][i], per["rotate_light"][i]) for i in idx])
            with torch.no_grad():
                imgs = self.G.synthesis(ws, noise_mode="const")
            from .imageio import gan_to_uint8

            crops = gan_to_uint8(imgs)
            for it, lat, crop, w in zip(chunk, latents, crops, ws, strict=True):
                out.append(EditResult(self.paste(it, lat, crop), crop, lat, w[None].cpu()))
        return out

    def paste(self, item, lat: Latent, crop: np.ndarray) -> np.ndarray:
        """The edited crop pasted into the photo `item` (the crop itself without an alignment)."""
        from .align import AlignedFace, load_image, paste_back

        if lat.alignment is None or isinstance(item, Latent):
            return crop
        a = lat.alignment
        af = AlignedFace(np.zeros((self.resolution,) * 2 + (3,), np.uint8), np.asarray(a["quad"]),
                         np.asarray(a["landmarks"]), tuple(a["input_size"]))
        return paste_back(load_image(item), af, crop)


def _rms(x: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[N]: root mean square of ws [N, num_ws, w_dim] in units of the generator's w spread."""
    return (x / std).square().mean(dim=[1, 2]).sqrt()


def _cache_get(lat: Latent, name: str, owner):
    """A value computed from a latent by `owner` (a mapper, an Editor) and kept on the latent object
    (not a field: never written to files), while its code and reconstruction are the same."""
    c = getattr(lat, name, None)
    if c is None or c[0] is not owner or c[1] is not lat.reconstruction or not torch.equal(c[2], lat.ws):
        return None
    return c[3]


def _cache_set(lat: Latent, name: str, owner, value) -> None:
    object.__setattr__(lat, name, (owner, lat.reconstruction, lat.ws.clone(), value))


def _expand(images) -> list:
    if _is_path(images) and Path(images).is_dir():
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EditError(f"{images}: no images (.jpg, .png, ...) in the folder")
        return files
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _per_image(v, n: int, name: str) -> list:
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise EditError(f"{name}: {len(v)} values for {n} images; give one value or one per image")
        return list(v)
    return [v] * n


def load_light_file(path: Path, num_lights: int):
    """.hdr/.exr -> EnvMap; .npy -> coefficients [L, 3] or a lat-long env map. Strict: a file with
    non-finite or negative values is refused (not repaired)."""
    if not path.is_file():
        raise EnvMapError(f"{path}: no such light file; give an env map (.hdr, .exr) or coefficients (.npy)")
    suffix = path.suffix.lower()
    if suffix not in (".hdr", ".exr", ".npy"):
        raise EnvMapError(f"{path}: unknown light file type {suffix!r}; use .hdr, .exr or .npy")
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
            raise EnvMapError(f"{path}: unreadable .npy ({type(e).__name__})") from None
        if a.shape == (num_lights, 3):
            if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
                raise EnvMapError(f"{path}: light coefficients must be finite numbers")
            return a.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return load_envmap(path)
        except UserWarning as w:
            raise EnvMapError(f"{path}: {w}; fix the env map") from None
        except (ValueError, TypeError) as e:
            raise EnvMapError(str(e).splitlines()[0] if str(e) else f"{path}: unreadable env map") from None
