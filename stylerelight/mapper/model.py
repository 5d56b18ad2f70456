"""`Mapper`: the conditioner and the per-layer network together, with what they belong to
(a generator, a light-stage layout, the range of views they were trained on), and their file.

File (own format, `torch.load(weights_only=True)`): {"format": "stylerelight-mapper", "version": 1,
"config": {...}, "state_dict": {...}, "generator": {"hash", "num_ws", "w_dim", "img_resolution"},
"stage": {"num_lights", "hash"}, "pose_range": {"yaw": deg, "pitch": deg}, "info": {...}}; a
detail carry's weights (`carry.*`) when config has "carry_hidden", a view carry's (`view_carry.*`)
when it has "view_carry_hidden" (and "view_carry_gain", the share of it applied); "shading_map"
(S, absent: 0) when the condition ends with the target view's shading map; "light_blend" and
"image_blend" ([lo, hi]) when the file carries the Editor's light blend chosen for its network;
a re-render read's weights (`read.*`) when config has "read_hidden" (and "read_steps": the refinement
steps of its re-renders' inversions; the Editor's "guided" method).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..gan.io import CheckpointError, generator_hash, read_torch_file
from ..runs import atomic_torch_save
from .conditioning import Conditioner, Edit
from .networks import DetailCarry, LatentMapper, RerenderRead

FORMAT = "stylerelight-mapper"
CARRY_KINDS = {"light": "carry", "view": "view_carry"}  # kind -> Mapper attribute (and state_dict prefix)
CARRY_PREFIXES = ("", "view_")  # the same order: the prefix of each carry's keys in the file's config
BLENDS = ("light_blend", "image_blend")  # the Editor's light blend ramps a file may carry (edit.py)


def check_view_carry_gain(gain: float) -> None:
    if not 0 <= gain <= 2:
        raise ValueError(f"view_carry_gain must be in [0, 2], not {gain}")


def check_blend(name: str, ramp) -> tuple[float, float]:
    """A light blend ramp (lo, hi), lo < hi, both finite and >= 0."""
    try:
        lo, hi = (float(v) for v in ramp)
        ok = 0 <= lo < hi < float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be two numbers 0 <= lo < hi, not {ramp!r}")
    return lo, hi


def stage_hash(directions: np.ndarray) -> str:
    d = np.round(np.asarray(directions, np.float64), 5).astype(np.float32)
    return hashlib.sha256(d.tobytes()).hexdigest()[:16]


class Mapper(nn.Module):
    """mapper(ws, edit) -> edited ws. `pose_range` is the view range (absolute yaw, pitch in
    degrees, symmetric) the training captures covered; edits beyond it are refused by the Editor."""

    def __init__(self, net: LatentMapper, conditioner: Conditioner, generator: dict, stage: dict,
                 pose_range: dict, info: dict | None = None, carry: DetailCarry | None = None,
                 view_carry: DetailCarry | None = None, view_carry_gain: float = 1.0,
                 read: RerenderRead | None = None):
        super().__init__()
        self.net, self.conditioner, self.carry, self.view_carry = net, conditioner, carry, view_carry
        self.read = read  # reads the mapper's edit with the encoded re-render (Editor method "guided")
        self.view_carry_gain = float(view_carry_gain)  # the share of the view carry applied (chosen on validation)
        # the Editor's light blend ramps chosen for this network on validation ("light_blend", "image_blend");
        # absent: the Editor's defaults (edit.LIGHT_BLEND, edit.IMAGE_BLEND, chosen for the bundled file)
        self.blend: dict[str, tuple[float, float]] = {}
        self.generator, self.stage, self.pose_range = dict(generator), dict(stage), dict(pose_range)
        self.info = dict(info or {})

    @property
    def geometry(self) -> bool:
        return self.conditioner.geometry

    def forward(self, ws: torch.Tensor, edit: Edit, normals: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(ws, self.conditioner(edit, normals))

    def carried(self, w_enc: torch.Tensor, answer: torch.Tensor, ws: torch.Tensor, edit: Edit,
                normals: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The answer for the encoder's code, M(w_enc, edit), with what the detail carry keeps of the
        refined code ws's own residual (ws - w_enc); the answer itself without a carry. cond: the
        edit's condition if already computed (it costs as much as the network)."""
        if self.carry is None:
            return answer
        cond = self.conditioner(edit, normals) if cond is None else cond
        return answer + self.carry(ws - w_enc, answer - w_enc, cond)

    def turned(self, ws: torch.Tensor, w_enc: torch.Tensor, direct: torch.Tensor, lit: torch.Tensor, edit: Edit,
               normals: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The refined code ws turned under a kept light: ws + M(w_enc, edit) - M(w_enc, edit at the
        source's view) (direct, lit), with what the view carry adds of ws's own residual (times
        view_carry_gain) where the view changes (nothing where it does not, nor without a view carry)."""
        out = ws + direct - lit
        if self.view_carry is None:
            return out
        turn = self.view_carry_gain * (1 - edit.same_view.to(ws.dtype))[:, None, None]
        cond = self.conditioner(edit, normals) if cond is None else cond
        return out + turn * self.view_carry(ws - w_enc, direct - lit, cond)

    def add_carry(self, hidden: int = 256, kind: str = "light", cond_hidden: int = 128) -> DetailCarry:
        """Attach an untrained (zero) detail carry (kind "light") or view carry ("view"); returns it."""
        n = self.net
        carry = DetailCarry(n.num_ws, n.w_dim, n.cond_dim, hidden, cond_hidden, w_std=n.w_std).to(n.w_std.device)
        setattr(self, CARRY_KINDS[kind], carry)
        return carry

    def add_read(self, hidden: int = 64, mix: float = 0.4, steps: int = 20) -> RerenderRead:
        """Attach an untrained re-render read (a fixed mix `mix` of the re-render's code, its re-renders
        inverted with `steps` refinement steps); returns it."""
        n = self.net
        self.read = RerenderRead(n.num_ws, n.w_dim, hidden, mix, steps, w_avg=n.w_avg,
                                 w_std=n.w_std).to(n.w_std.device)
        return self.read

    def check_for(self, G, num_lights: int | None = None, directions: np.ndarray | None = None) -> None:
        """One-line refusal when this mapper was trained for another generator or light stage."""
        g = self.generator
        if (g.get("num_ws"), g.get("w_dim")) != (G.num_ws, G.w_dim):
            raise CheckpointError(f"the mapper works on {g.get('num_ws')} x {g.get('w_dim')} ws but the generator "
                                  f"has {G.num_ws} x {G.w_dim}; use the mapper trained for this generator")
        if g.get("hash"):
            got = generator_hash(G)
            if got != g["hash"]:
                raise CheckpointError(f"the mapper was trained for generator {g['hash']}, not this one ({got}); "
                                      "use the matching generator or mapper")
        if num_lights is not None and num_lights != self.stage.get("num_lights"):
            raise CheckpointError(f"the mapper takes {self.stage.get('num_lights')} light-stage coefficients, "
                                  f"not {num_lights}")
        if directions is not None and self.stage.get("hash") and stage_hash(directions) != self.stage["hash"]:
            raise CheckpointError("the mapper was trained with another light-stage layout; use its stage")


def attach_carries(M: Mapper, src: Mapper) -> Mapper:
    """Give M (in place) the detail and view carries of src and its view_carry_gain, widened to M's
    condition where M's is wider (its extra inputs reach them with zero weight): to measure a
    retrained network with the carries of the file it came from, before carries of its own are trained."""
    from .networks import load_widened

    for kind, name in CARRY_KINDS.items():
        theirs = getattr(src, name)
        if theirs is not None:
            cfg = theirs.config()
            load_widened(M.add_carry(cfg["carry_hidden"], kind, cfg["carry_cond_hidden"]), theirs.state_dict())
    M.view_carry_gain = src.view_carry_gain
    return M


def build_mapper(G, directions: np.ndarray, geometry: bool = True, hidden: int = 256, pose_range=None,
                 w_avg=None, w_std=None, info: dict | None = None, shading_map: int = 0, code_mix: int = 0) -> Mapper:
    cond = Conditioner(len(directions), directions, geometry, shading_map)
    net = LatentMapper(G.num_ws, G.w_dim, cond.dim, hidden, w_avg=w_avg, w_std=1.0 if w_std is None else w_std,
                       code_mix=code_mix)
    gen = {"hash": generator_hash(G), "num_ws": G.num_ws, "w_dim": G.w_dim, "img_resolution": G.img_resolution}
    stage = {"num_lights": len(directions), "hash": stage_hash(directions),
             "directions": torch.from_numpy(np.asarray(directions, np.float32))}
    return Mapper(net, cond, gen, stage, pose_range or {"yaw": 45.0, "pitch": 20.0}, info)


def save_mapper(M: Mapper, path: str | os.PathLike) -> None:
    cfg = {**M.net.config(), "geometry": M.geometry}
    if M.conditioner.shading_map:
        cfg["shading_map"] = M.conditioner.shading_map
    for pre, name in zip(CARRY_PREFIXES, CARRY_KINDS.values(), strict=True):
        if getattr(M, name) is not None:
            cfg.update({pre + k: v for k, v in getattr(M, name).config().items()})
    if M.view_carry is not None:
        cfg["view_carry_gain"] = M.view_carry_gain
    if M.read is not None:
        cfg.update(M.read.config())
    cfg.update({k: list(check_blend(k, v)) for k, v in M.blend.items()})
    state = {k: v.detach().cpu().clone() for k, v in M.state_dict().items()
             if not k.startswith("conditioner.probe.")}  # the probe is rebuilt from the stage
    atomic_torch_save({"format": FORMAT, "version": 1, "config": cfg, "state_dict": state,
                       "generator": M.generator, "stage": M.stage, "pose_range": M.pose_range, "info": M.info}, path)


def load_mapper(path: str | os.PathLike, device: str | torch.device = "cpu") -> Mapper:
    path = Path(path)
    obj = read_torch_file(path, "a mapper checkpoint (.pt)")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stylerelight mapper; train one with `stylerelight train mapper`")
    try:
        cfg, stage = obj["config"], obj["stage"]
        dirs = stage["directions"].double().numpy()
        if dirs.ndim != 2 or dirs.shape[1] != 3 or not np.isfinite(dirs).all():
            raise ValueError("light directions are not [L, 3]")
        cond = Conditioner(len(dirs), dirs, bool(cfg["geometry"]), int(cfg.get("shading_map", 0)))
        net = LatentMapper(int(cfg["num_ws"]), int(cfg["w_dim"]), int(cfg["cond_dim"]), int(cfg["hidden"]),
                           cond_hidden=int(cfg["cond_hidden"]), code_mix=int(cfg.get("code_mix", 0)))
        if net.cond_dim != cond.dim:
            raise ValueError(f"condition size {net.cond_dim} != {cond.dim}")
        carries = [None, None]  # files since session 16 may hold a detail carry, since 17 a view carry
        for i, pre in enumerate(CARRY_PREFIXES):
            if cfg.get(f"{pre}carry_hidden"):
                carries[i] = DetailCarry(net.num_ws, net.w_dim, net.cond_dim, int(cfg[f"{pre}carry_hidden"]),
                                         int(cfg[f"{pre}carry_cond_hidden"]))
        read = (RerenderRead(net.num_ws, net.w_dim, int(cfg["read_hidden"]), steps=int(cfg["read_steps"]))
                if cfg.get("read_hidden") else None)
        M = Mapper(net, cond, dict(obj["generator"]), dict(stage), dict(obj["pose_range"]),
                   dict(obj.get("info") or {}), *carries, float(cfg.get("view_carry_gain", 1.0)), read)
        check_view_carry_gain(M.view_carry_gain)
        M.blend = {k: check_blend(k, cfg[k]) for k in BLENDS if k in cfg}
        sd = obj["state_dict"]
        missing, unexpected = M.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("conditioner.probe.")]
        if missing or unexpected:
            raise ValueError(f"weights do not fit ({(missing + unexpected)[:3]})")
        for k, v in sd.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"{k} holds non-finite values")
        yaw, pitch = float(M.pose_range["yaw"]), float(M.pose_range["pitch"])
        if not (0 < yaw <= 180 and 0 < pitch <= 90):
            raise ValueError("pose range out of bounds")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: damaged mapper checkpoint ({first})") from None
    return M.to(device).eval().requires_grad_(False)
