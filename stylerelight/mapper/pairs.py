"""Training pairs for the mapper, drawn from OLAT captures.

Lighting is unlimited with OLAT data: any env map's image is a linear combination of a capture's
images, shown through the one display transform (`lighting.face_display`). What is not free on a
CPU is putting images into W+, so sources come from a *latent bank*: per subject, every camera
under K bank lights, relit, encoded once (the encoder, as the Editor will) and read off by the
reconstruction's fast path (pose, light, shape). Pairs then join a bank source with either a bank
target (image and latent supervision) or a fresh target under a light never encoded (image
supervision only), so the mapper sees unlimited target lights. On a GPU the bank can be large.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..lighting import OLATCapture
from ..lighting.captures import LightPool, capture_dirs
from ..lighting.olat import _atomic_json, _atomic_npy

BANK_FORMAT = "stylerelight-latent-bank"


def exposure_mode(cap: OLATCapture) -> str:
    """What sets a capture's display exposure: "frame" (frame.npy) or "crop" (the crop itself)."""
    return "frame" if cap.frame is not None else "crop"


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(u8)).float() / 127.5 - 1
    return x.movedim(-1, -3)


@dataclass
class BankSpec:
    lights_per_subject: int = 6
    light_pool: int = 2000
    seed: int = 0
    refine_steps: int = 0  # L-BFGS steps after the encoder (as Editor.invert); 0: encoder codes


def _spec_key(spec: dict | None) -> dict:
    return {**{"refine_steps": 0}, **(spec or {})}  # banks written before refine_steps are encoder codes


def build_bank(olat_dir, out_dir, E, cnn, spec: BankSpec, hdr_dir: str | None = None, progress: bool = True,
               limit: int | None = None, G=None, part: tuple[int, int] = (0, 1)) -> Path:
    """Relight, encode (and refine, spec.refine_steps > 0, which needs G) and read off every
    (subject, camera, bank light); one shard per subject, written atomically, so a stopped build
    resumes. part=(i, k) builds every k-th subject from the i-th, so k processes share the work.
    Returns out_dir."""
    from tqdm import tqdm

    if spec.refine_steps and G is None:
        raise ValueError("a refined latent bank needs the generator: build_bank(..., G=G)")
    dirs = capture_dirs(olat_dir)[:limit]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = OLATCapture.load(dirs[0])
    stage, exposure = first.stage, exposure_mode(first)
    pool = LightPool(stage, spec.light_pool, spec.seed, hdr_dir)
    from ..invert import encoder_hash

    meta = {"format": BANK_FORMAT, "version": 1, "olat": str(Path(olat_dir).resolve()), "spec": spec.__dict__,
            "hdr_dir": hdr_dir, "encoder": E.meta.get("generator", {}).get("hash", ""),
            "encoder_hash": encoder_hash(E), "exposure": exposure}
    mpath = out / "bank.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        keys = ("spec", "hdr_dir", "encoder", "encoder_hash", "exposure")
        old.setdefault("exposure", "crop")  # banks written before frame.npy
        old["spec"], meta["spec"] = _spec_key(old.get("spec")), _spec_key(meta["spec"])
        old.setdefault("encoder_hash", meta["encoder_hash"])  # banks written before it was recorded
        if {k: old.get(k) for k in keys} != {k: meta[k] for k in keys}:
            raise FileExistsError(f"{out} holds a latent bank made with other settings; use another run folder")
    _atomic_json(mpath, meta)  # several builders may write these (same content): each its own temp file
    _atomic_npy(out / "lights.npy", pool.coeffs)
    i, k = part
    for d in tqdm(dirs[i::k], desc="latent bank", unit="subject", disable=not progress):
        shard = out / f"{d.name}.npz"
        if shard.exists():
            continue
        cap = OLATCapture.load(d)
        if exposure_mode(cap) != exposure:
            raise ValueError(f"{d}: {exposure_mode(cap)} exposure, but {dirs[0].name} has {exposure}; "
                             f"add frame.npy to every capture (`stylerelight lightstage render --aligned` again)")
        rng = np.random.default_rng([spec.seed, int(d.name.split("_")[-1]) if d.name.split("_")[-1].isdigit() else 0])
        ids = rng.choice(len(pool), spec.lights_per_subject, replace=False)
        C, K = cap.num_cameras, len(ids)
        imgs = np.stack([[cap.display(pool.coeffs[k], c) for k in ids] for c in range(C)])  # [C, K, H, W, 3]
        x = to_tensor(imgs.reshape(C * K, *imgs.shape[2:]))
        with torch.no_grad():
            ws = torch.cat([E(x[j:j + 32]) for j in range(0, len(x), 32)])  # on E's device (it moves x)
            est = cnn.estimate(x)
        if spec.refine_steps:
            from ..invert import invert

            ws = invert(G, x, steps=spec.refine_steps, init=ws, progress=False)
        ws = ws.cpu()
        rec = dict(images=imgs, ws=ws.reshape(C, K, *ws.shape[1:]).half().numpy(), light_ids=ids,
                   cam=np.array([[c["yaw"], c["pitch"]] for c in cap.cameras], np.float32),
                   est_pose=np.stack([est.yaw, est.pitch], -1).reshape(C, K, 2).astype(np.float32),
                   est_light=est.light.reshape(C, K, *est.light.shape[1:]).astype(np.float16),
                   est_id=est.identity.reshape(C, K, -1).astype(np.float32),
                   est_expr=est.expression.reshape(C, K, -1).astype(np.float32))
        _atomic_npz(shard, **rec)
    return out


def refine_sources(bank_dir, G, E, lights: int = 1, steps: int = 20, progress: bool = True,
                   limit: int | None = None, part: tuple[int, int] = (0, 1)) -> Path:
    """The carries' sources: the first `lights` bank lights of every subject (all cameras)
    encoded and refined exactly as `Editor.invert` does (encoder, then `steps` L-BFGS steps), in
    float32 (the bank's float16 codes would round away much of the refinement's small residual).
    One shard per subject in BANK/refined/ (atomic, resumable; part as build_bank). Asking for more
    lights than a folder holds (same steps and encoder) refines only the lights it lacks. Returns the folder."""
    from tqdm import tqdm

    from ..invert import encoder_hash, invert

    bank = Path(bank_dir)
    out = bank / "refined"
    out.mkdir(exist_ok=True)
    meta = {"lights": int(lights), "steps": int(steps), "encoder_hash": encoder_hash(E)}
    mpath = out / "refined.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if {**old, "lights": 0} != {**meta, "lights": 0}:
            raise FileExistsError(f"{out} holds refined sources made with other settings; use another run folder")
        meta["lights"] = max(meta["lights"], int(old["lights"]))  # never claims fewer than some shards hold
    _atomic_json(mpath, meta)
    shards = sorted(p for p in bank.glob("*.npz") if not p.name.startswith("."))[:limit]
    i, k = part
    for sh in tqdm(shards[i::k], desc="refined sources", unit="subject", disable=not progress):
        dst = out / sh.name
        have = dict(np.load(dst)) if dst.exists() else {}
        done = have["ws_ref"].shape[1] if have else 0
        if done >= lights:
            continue
        imgs = np.load(sh)["images"][:, done:lights]                         # [C, k, H, W, 3] u8
        x = to_tensor(imgs.reshape(-1, *imgs.shape[2:]))
        with torch.no_grad():
            enc = E(x)
        ref = invert(G, x, steps=steps, init=enc, progress=False).cpu()
        enc = enc.cpu()
        shape = (*imgs.shape[:2], *enc.shape[1:])
        new = {"ws_enc": enc.reshape(shape).numpy(), "ws_ref": ref.reshape(shape).numpy()}
        _atomic_npz(dst, **{n: np.concatenate([have[n], v], 1) if have else v for n, v in new.items()})
    return out


def _atomic_npz(path: Path, **arrays) -> None:
    """One shard through a temp file and a rename (a stopped build never leaves half a shard)."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class Bank:
    """A latent bank in memory (small: uint8 images, float16 ws) plus its OLAT captures (mmap)."""

    def __init__(self, bank_dir, olat_dir=None, limit: int | None = None):
        """limit: read only the shards of the first `limit` capture folders (as build_bank's), so a
        folder whose bank was built for more subjects trains on the ones asked for."""
        d = self.bank_dir = Path(bank_dir)
        meta = json.loads((d / "bank.json").read_text())
        self.lights = np.load(d / "lights.npy")
        self.encoder_hash = meta.get("encoder_hash", "")  # whose codes the bank holds ("" for older banks)
        olat_root = Path(olat_dir or meta["olat"])
        shards = sorted(p for p in d.glob("*.npz") if not p.name.startswith("."))  # one per capture folder
        if limit:
            wanted = {p.name for p in capture_dirs(olat_root)[:limit]}
            shards = [s for s in shards if s.stem in wanted]
        if not shards:
            raise FileNotFoundError(f"{d}: the latent bank is empty")
        z = [dict(np.load(s)) for s in shards]
        self.names = [s.stem for s in shards]
        self.olat_dirs = [olat_root / n for n in self.names]
        self.images = torch.from_numpy(np.stack([s["images"] for s in z]))          # [S, C, K, H, W, 3] u8
        self.ws = torch.from_numpy(np.stack([s["ws"] for s in z]))                  # [S, C, K, n, w] f16
        self.light_ids = np.stack([s["light_ids"] for s in z])                      # [S, K]
        self.cam = torch.from_numpy(np.stack([s["cam"] for s in z]))                 # [S, C, 2]
        self.est_pose = torch.from_numpy(np.stack([s["est_pose"] for s in z]))       # [S, C, K, 2]
        self.est_light = torch.from_numpy(np.stack([s["est_light"] for s in z]).astype(np.float32))
        self.est_id = torch.from_numpy(np.stack([s["est_id"] for s in z]))
        self.est_expr = torch.from_numpy(np.stack([s["est_expr"] for s in z]))
        self._caps: dict[int, OLATCapture] = {}
        self.ref_enc = self.ref_ws = None

    def load_refined(self, lights: int | None = None) -> None:
        """Read BANK/refined (refine_sources) for every subject of the bank: ref_enc, ref_ws
        [S, C, k, n, w] float32, the encoder's and the refined codes of the first k = `lights`
        bank lights (None: as many as every subject has)."""
        d = self.bank_dir / "refined"
        missing = [n for n in self.names if not (d / f"{n}.npz").is_file()]
        if missing:
            raise FileNotFoundError(f"{d}: no refined sources for {len(missing)} subjects (e.g. {missing[0]}); "
                                    "build them first (refine_sources)")
        z = [dict(np.load(d / f"{n}.npz")) for n in self.names]
        k = min(s["ws_ref"].shape[1] for s in z)
        if lights is not None and k < lights:
            raise FileNotFoundError(f"{d}: refined sources of {k} bank lights, not {lights}; "
                                    "refine them (refine_sources)")
        k = k if lights is None else lights
        self.ref_enc = torch.from_numpy(np.stack([s["ws_enc"][:, :k] for s in z]))
        self.ref_ws = torch.from_numpy(np.stack([s["ws_ref"][:, :k] for s in z]))

    def probe_normals(self, probe) -> torch.Tensor:
        """[S, C, K, P, 3] normals of every bank image's estimated shape (computed once per bank)."""
        if getattr(self, "_normals", None) is None:
            ids, ex = self.est_id.flatten(0, 2), self.est_expr.flatten(0, 2)
            dev = probe.mean.device
            n = torch.cat([probe.normals(ids[i:i + 256].to(dev), ex[i:i + 256].to(dev)).cpu()
                           for i in range(0, len(ids), 256)])
            self._normals = n.reshape(*self.est_id.shape[:3], *n.shape[1:]).half()
        return self._normals

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[:3])

    def capture(self, s: int) -> OLATCapture:
        if s not in self._caps:
            self._caps[s] = OLATCapture.load(self.olat_dirs[s])
        return self._caps[s]


MODES = ("relight", "view", "both", "same")


@dataclass
class PairBatch:
    src_ws: torch.Tensor       # [N, n, w]
    tgt_img: torch.Tensor      # [N, 3, H, W] in [-1, 1]
    tgt_ws: torch.Tensor       # [N, n, w] (zeros where unknown)
    has_tgt_ws: torch.Tensor   # [N] bool
    src_img: torch.Tensor
    edit: object               # conditioning.Edit
    mode: list
    src_index: tuple           # (subject, camera, bank light) tensors of the sources
    ref_ws: torch.Tensor | None = None  # [N, n, w] refined codes of the sources (detail carry pairs)

    def to(self, device) -> PairBatch:
        """The batch on `device` (src_index stays on the CPU: it indexes the bank)."""
        mv = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return PairBatch(mv(self.src_ws), mv(self.tgt_img), mv(self.tgt_ws), mv(self.has_tgt_ws), mv(self.src_img),
                         self.edit.to(device), self.mode, self.src_index, mv(self.ref_ws))


def _draw_source(gen: torch.Generator, shape: tuple, subjects, modes: tuple, mode_probs) -> tuple:
    """One source (subject, camera, bank light) and a mode; returns them and the draw function."""
    S, C, K = shape
    pick = lambda hi: int(torch.randint(hi, [1], generator=gen))  # noqa: E731
    s = subjects[pick(len(subjects))] if subjects else pick(S)
    c1, k1 = pick(C), pick(K)
    mode = modes[int(torch.multinomial(torch.tensor(mode_probs), 1, generator=gen))]
    return s, c1, k1, mode, pick


def _edits(bank: Bank, rows: list) -> tuple:
    """The Edit of rows (s, c1, k1, c2, light, ...) and the source index tensors."""
    from .conditioning import Edit

    s_, c1_, k1_, c2_ = (torch.tensor([r[i] for r in rows]) for i in range(4))
    edit = Edit(light=torch.from_numpy(np.stack([r[4] for r in rows])).float(), src_pose=bank.est_pose[s_, c1_, k1_],
                delta_pose=bank.cam[s_, c2_] - bank.cam[s_, c1_], same_view=(c1_ == c2_).float(),
                src_light=bank.est_light[s_, c1_, k1_], identity=bank.est_id[s_, c1_, k1_],
                expression=bank.est_expr[s_, c1_, k1_])
    return edit, (s_, c1_, k1_)


def sample_pairs(bank: Bank, n: int, gen: torch.Generator, mode_probs=(0.35, 0.25, 0.25, 0.15),
                 fresh_fraction: float = 0.5, subjects: list[int] | None = None,
                 fresh_weights: torch.Tensor | None = None) -> PairBatch:
    """n pairs (source from the bank; target a bank image or a fresh relight) and their edits.
    fresh_weights: how often each pool light is a fresh target (None: all alike)."""
    C, K = bank.shape[1:]
    rows = []
    for _ in range(n):
        s, c1, k1, mode, pick = _draw_source(gen, bank.shape, subjects, MODES, mode_probs)
        c2 = c1 if mode in ("relight", "same") else (c1 + 1 + pick(C - 1)) % C
        k2 = k1 if mode in ("view", "same") else (k1 + 1 + pick(K - 1)) % K
        fresh = mode in ("relight", "both") and float(torch.rand([1], generator=gen)) < fresh_fraction
        if fresh:
            k = (pick(len(bank.lights)) if fresh_weights is None
                 else int(torch.multinomial(fresh_weights, 1, generator=gen)))
            light = bank.lights[k]
            img = to_tensor(bank.capture(s).display(light, c2))
            tws, has = torch.zeros_like(bank.ws[s, c1, k1], dtype=torch.float32), False
        else:
            light = bank.lights[bank.light_ids[s, k2]]
            img = to_tensor(bank.images[s, c2, k2].numpy())
            tws, has = bank.ws[s, c2, k2].float(), True
        rows.append((s, c1, k1, c2, light, img, tws, has, mode))
    edit, (s_, c1_, k1_) = _edits(bank, rows)
    return PairBatch(src_ws=bank.ws[s_, c1_, k1_].float(), tgt_img=torch.stack([r[5] for r in rows]),
                     tgt_ws=torch.stack([r[6] for r in rows]), has_tgt_ws=torch.tensor([r[7] for r in rows]),
                     src_img=to_tensor(bank.images[s_, c1_, k1_].numpy()), edit=edit, mode=[r[8] for r in rows],
                     src_index=(s_, c1_, k1_))


CARRY_MODES = ("relight", "both", "same")


def _refined_shape(bank: Bank) -> tuple:
    """(S, C, k) of the bank's refined sources; refuses a bank whose refined sources are not loaded."""
    if bank.ref_ws is None:
        raise ValueError("the bank's refined sources are not loaded (Bank.load_refined)")
    return tuple(bank.ref_ws.shape[:3])


def _carry_batch(bank: Bank, rows: list) -> PairBatch:
    """The carries' pairs from rows (s, c1, k1, c2, light, target image, mode): the encoder's codes of
    refined sources with their refined codes beside, image targets only."""
    edit, (s_, c1_, k1_) = _edits(bank, rows)
    src = bank.ref_enc[s_, c1_, k1_]
    return PairBatch(src_ws=src, tgt_img=torch.stack([r[5] for r in rows]), tgt_ws=torch.zeros_like(src),
                     has_tgt_ws=torch.zeros(len(rows), dtype=torch.bool),
                     src_img=to_tensor(bank.images[s_, c1_, k1_].numpy()), edit=edit, mode=[r[6] for r in rows],
                     src_index=(s_, c1_, k1_), ref_ws=bank.ref_ws[s_, c1_, k1_])


def sample_carry_pairs(bank: Bank, n: int, gen: torch.Generator, mode_probs=(0.55, 0.3, 0.15),
                       subjects: list[int] | None = None) -> PairBatch:
    """n pairs for the detail carry: a refined source (bank.load_refined) and a target under a
    fresh pool light (relight: same camera; both: another camera) or its own image (same). The
    source codes are the encoder's, as the Editor computes them (float32), with ref_ws beside."""
    shape = _refined_shape(bank)
    C = shape[1]
    rows = []
    for _ in range(n):
        s, c1, k1, mode, pick = _draw_source(gen, shape, subjects, CARRY_MODES, mode_probs)
        c2 = (c1 + 1 + pick(C - 1)) % C if mode == "both" else c1
        if mode == "same":
            light, img = bank.lights[bank.light_ids[s, k1]], to_tensor(bank.images[s, c1, k1].numpy())
        else:
            light = bank.lights[pick(len(bank.lights))]
            img = to_tensor(bank.capture(s).display(light, c2))
        rows.append((s, c1, k1, c2, light, img, mode))
    return _carry_batch(bank, rows)


def sample_view_carry_pairs(bank: Bank, n: int, gen: torch.Generator, estimate_fraction: float = 0.75,
                            subjects: list[int] | None = None, turn_scale: float = 0.0) -> PairBatch:
    """n pairs for the view carry: a refined source and the same subject under the same bank light
    from another camera (a turn that keeps the light). The edit's light is, as the Editor's "keep the
    light", the source's estimate (estimate_fraction of the pairs), else the true bank light (a user
    who names the photo's own env map). turn_scale > 0 (degrees) draws the other camera with weight
    exp(-turn / turn_scale) (turn: the angle between the two cameras' (yaw, pitch)), so that small
    turns, the common edit, are not outnumbered by the stage's wide ones; 0: uniformly."""
    shape = _refined_shape(bank)
    C = shape[1]
    rows = []
    for _ in range(n):
        s, c1, k1, _, pick = _draw_source(gen, shape, subjects, ("view",), (1.0,))
        if turn_scale > 0:
            turn = (bank.cam[s] - bank.cam[s, c1]).norm(dim=-1)
            p = torch.exp(-turn / turn_scale)
            p[c1] = 0
            c2 = int(torch.multinomial(p, 1, generator=gen))
        else:
            c2 = (c1 + 1 + pick(C - 1)) % C
        if float(torch.rand([1], generator=gen)) < estimate_fraction:
            light = bank.est_light[s, c1, k1].numpy()
        else:
            light = bank.lights[bank.light_ids[s, k1]]
        rows.append((s, c1, k1, c2, light, to_tensor(bank.images[s, c2, k1].numpy()), "view"))
    return _carry_batch(bank, rows)
