"""The latent mapper: PhotoApp's per-layer networks on W+.

Every ws layer has its own MLP that reads that layer's code (standardised by the generator's w
statistics) and an embedding of the condition, and writes a residual. The per-layer MLPs run as
one batched matrix product over layers (`LayerwiseLinear`), so mapping a code is a handful of
small matmuls.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LayerwiseLinear(nn.Module):
    """num_layers independent linear maps applied to x [N, num_layers, c_in]."""

    def __init__(self, num_layers: int, c_in: int, c_out: int, init_scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_layers, c_in, c_out) * (init_scale / math.sqrt(c_in)))
        self.bias = nn.Parameter(torch.zeros(num_layers, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nli,lio->nlo", x, self.weight) + self.bias


class LatentMapper(nn.Module):
    """w+ [N, num_ws, w_dim] and a condition [N, cond_dim] -> edited w+ (same shape).

    code_mix > 0: every layer's MLP also reads an embedding (code_mix wide) of the whole code, not
    only its own layer's: in PhotoApp's per-layer design a fine layer, which holds the shading, cannot
    see the coarse layers that hold the shape its shadows depend on. Its read-out starts at zero, so a
    network gaining it answers as before until trained."""

    def __init__(self, num_ws: int, w_dim: int, cond_dim: int, hidden: int = 256, cond_hidden: int = 256,
                 w_avg: torch.Tensor | None = None, w_std: torch.Tensor | float = 1.0, code_mix: int = 0):
        super().__init__()
        self.num_ws, self.w_dim, self.cond_dim, self.hidden = num_ws, w_dim, cond_dim, hidden
        self.code_mix = code_mix
        self.register_buffer("w_avg", torch.zeros(w_dim) if w_avg is None else w_avg.detach().clone().float())
        self.register_buffer("w_std", torch.as_tensor(w_std, dtype=torch.float32).clone())
        self.cond = nn.Sequential(nn.Linear(cond_dim, cond_hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(cond_hidden, cond_hidden), nn.LeakyReLU(0.2))
        self.layer_cond = LayerwiseLinear(num_ws, cond_hidden, hidden)
        self.fc1 = LayerwiseLinear(num_ws, w_dim, hidden)
        self.fc2 = LayerwiseLinear(num_ws, hidden, hidden)
        self.out = LayerwiseLinear(num_ws, hidden, w_dim, init_scale=0.01)  # starts near the identity map
        if code_mix:
            self.code_embed = nn.Sequential(nn.Linear(num_ws * w_dim, code_mix), nn.LeakyReLU(0.2))
            self.layer_code = LayerwiseLinear(num_ws, code_mix, hidden, init_scale=0.0)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, ws: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = (ws - self.w_avg) / self.w_std
        c = self.cond(cond)[:, None].expand(-1, self.num_ws, -1)
        pre = self.fc1(x) + self.layer_cond(c)
        if self.code_mix:
            g = self.code_embed(x.flatten(1))[:, None].expand(-1, self.num_ws, -1)
            pre = pre + self.layer_code(g)
        h = self.act(pre)
        h = self.act(self.fc2(h))
        return ws + self.out(h) * self.w_std

    def config(self) -> dict:
        cfg = {"num_ws": self.num_ws, "w_dim": self.w_dim, "cond_dim": self.cond_dim, "hidden": self.hidden,
               "cond_hidden": self.cond[0].out_features}
        if self.code_mix:
            cfg["code_mix"] = self.code_mix
        return cfg


class DetailCarry(nn.Module):
    """What of a refined code's own detail survives the edit.

    A photo's code is the encoder's, w_enc, plus the refinement's residual r = w - w_enc (the
    per-image detail the encoder missed: +4-5 dB). The mapper, trained on encoder codes, answers
    M(w_enc, edit) and so drops r under a new light; adding r unchanged is worse (it was fitted
    under the old light: highlights, shadow edges). This network reads r, the mapper's move
    M(w_enc, edit) - w_enc and the condition, and writes the part of the new light's residual it
    can predict: per layer a linear map of r plus an MLP, both starting at zero (so a mapper with
    an untrained carry answers as it did without one)."""

    def __init__(self, num_ws: int, w_dim: int, cond_dim: int, hidden: int = 256, cond_hidden: int = 128,
                 w_std: torch.Tensor | float = 1.0):
        super().__init__()
        self.num_ws, self.w_dim, self.cond_dim, self.hidden = num_ws, w_dim, cond_dim, hidden
        self.register_buffer("w_std", torch.as_tensor(w_std, dtype=torch.float32).clone())
        self.cond = nn.Sequential(nn.Linear(cond_dim, cond_hidden), nn.LeakyReLU(0.2))
        self.layer_cond = LayerwiseLinear(num_ws, cond_hidden, hidden)
        self.fc1 = LayerwiseLinear(num_ws, 2 * w_dim, hidden)
        self.fc2 = LayerwiseLinear(num_ws, hidden, hidden)
        self.out = LayerwiseLinear(num_ws, hidden, w_dim, init_scale=0.0)
        self.linear = LayerwiseLinear(num_ws, w_dim, w_dim, init_scale=0.0)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, residual: torch.Tensor, move: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """residual, move [N, num_ws, w_dim] (w units), cond [N, cond_dim] -> [N, num_ws, w_dim] to add."""
        r, m = residual / self.w_std, move / self.w_std
        c = self.cond(cond)[:, None].expand(-1, self.num_ws, -1)
        h = self.act(self.fc1(torch.cat([r, m], -1)) + self.layer_cond(c))
        h = self.act(self.fc2(h))
        return (self.out(h) + self.linear(r)) * self.w_std

    def config(self) -> dict:
        return {"carry_hidden": self.hidden, "carry_cond_hidden": self.cond[0].out_features}


READ_KINDS = ("relight", "turn", "both")  # RerenderRead's kinds of edit: light only, view only (light kept), both


def read_kind(light_changed: torch.Tensor, view_changed: torch.Tensor) -> torch.Tensor:
    """[N] long index into READ_KINDS (an edit changing neither reads as a relight; the Editor gates those)."""
    return torch.where(view_changed.bool(), torch.where(light_changed.bool(), 2, 1), 0).long()


class RerenderRead(nn.Module):
    """The mapper's edit read together with the encoded re-render of the reconstruction under the target.

    m is the mapper's edited code, r the photo's code moved by the W+ change between the inverted codes
    of two Mitsuba re-renders of the source's full reconstruction (under the target light and view,
    and under its own estimate: mapper/rerender.py, inverted by the encoder and `steps` L-BFGS steps,
    as the read's training pairs were). The two err differently
    (the mapper where its pairs were sparse, the re-render where the head model misses the face), so
    per layer and kind of edit it writes

        m + a[kind, layer] (r - m) + MLP(standardised m, r - m, kind)

    with a starting at `mix` and the MLP's read-out at zero (a mix that was measured before training).
    Trained by the generator's image loss on pairs of training subjects (mapper/read_training.py)."""

    def __init__(self, num_ws: int, w_dim: int, hidden: int = 64, mix: float = 0.4, steps: int = 20,
                 w_avg: torch.Tensor | None = None, w_std: torch.Tensor | float = 1.0):
        super().__init__()
        self.num_ws, self.w_dim, self.hidden, self.steps = num_ws, w_dim, hidden, int(steps)
        self.register_buffer("w_avg", torch.zeros(w_dim) if w_avg is None else w_avg.detach().clone().float())
        self.register_buffer("w_std", torch.as_tensor(w_std, dtype=torch.float32).clone())
        self.a = nn.Parameter(torch.full((len(READ_KINDS), num_ws, 1), float(mix)))
        self.fc1 = LayerwiseLinear(num_ws, 2 * w_dim + len(READ_KINDS), hidden)
        self.out = LayerwiseLinear(num_ws, hidden, w_dim, init_scale=0.0)

    def forward(self, m: torch.Tensor, r: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        """m, r [N, num_ws, w_dim]; kind [N] (READ_KINDS index) -> [N, num_ws, w_dim]."""
        d = r - m
        onehot = nn.functional.one_hot(kind, len(READ_KINDS)).to(m.dtype)[:, None].expand(-1, self.num_ws, -1)
        x = torch.cat([(m - self.w_avg) / self.w_std, d / self.w_std, onehot], -1)
        return m + self.a[kind] * d + self.out(torch.relu(self.fc1(x))) * self.w_std

    def config(self) -> dict:
        return {"read_hidden": self.hidden, "read_steps": self.steps}


NEW_BRANCHES = ("code_embed.", "layer_code.")  # parts a network may gain (zero read-out): kept as initialised


def load_widened(module: nn.Module, state: dict) -> None:
    """Load `state` into `module`, whose condition input may be wider: the condition's first layer
    ("cond.0.weight") takes the old inputs' columns and zeros for the new ones, which come last, so
    the module answers exactly as before until training uses them (a mapper gaining a conditioning).
    A module gaining the whole-code branch (LatentMapper's code_mix) keeps its own for it."""
    own = module.state_dict()
    state = dict(state)
    for k, v in own.items():
        if k.startswith(NEW_BRANCHES) and k not in state:
            state[k] = v
    k = "cond.0.weight"
    if k in state and k in own and state[k].shape != own[k].shape:
        old, new = state[k], own[k]
        if old.shape[0] != new.shape[0] or old.shape[1] > new.shape[1]:
            raise ValueError(f"condition layer {list(old.shape)} does not widen to {list(new.shape)}")
        state[k] = torch.cat([old, old.new_zeros(old.shape[0], new.shape[1] - old.shape[1])], 1)
    module.load_state_dict(state)
