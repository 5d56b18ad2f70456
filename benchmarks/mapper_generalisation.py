"""Does the mapper's network generalise to unseen subjects, or learn its training subjects? The same
kind of pairs (`pairs.sample_pairs`, as training draws them: relight, view, both, same; bank or fresh
target lights) on a latent bank of training captures and on one of unseen captures, mean PSNR of
G(network(encoder code)) against the relit capture per mode, beside what bounds it: no-op (the
source's code) and the encoder's code of the target (bank targets only). The gap to that bound on
training subjects against unseen ones says whether more training would pay (both shrink) or more
subjects (only the training gap shrinks).

    stylerelight lightstage render --aligned --subjects 12 --seed 4000100 --out data/olat64_val
    python benchmarks/mapper_generalisation.py --train-bank runs/map64_shading_control/bank \\
        --unseen-olat data/olat64_val --unseen-bank runs/val_bank
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylerelight.bundled import GENERATOR, MAPPER, MAPPER_ENCODER, bundled  # noqa: E402
from stylerelight.gan import load_generator  # noqa: E402
from stylerelight.invert import load_encoder, psnr  # noqa: E402
from stylerelight.mapper import load_mapper  # noqa: E402
from stylerelight.mapper.pairs import MODES, Bank, BankSpec, build_bank, sample_pairs  # noqa: E402
from stylerelight.recon import default_cnn  # noqa: E402


def measure(M, G, bank: Bank, pairs: int, seed: int) -> dict:
    """{mode: {row: [PSNR per pair]}} on `pairs` pairs drawn with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    res = {m: {"network": [], "no-op": [], "network, bank targets": [], "encoder code of target": []} for m in MODES}
    for start in range(0, pairs, 32):
        b = sample_pairs(bank, min(32, pairs - start), gen)
        normals = bank.probe_normals(M.conditioner.probe)[b.src_index].float() if M.geometry else None
        with torch.no_grad():
            ws = M(b.src_ws, b.edit, normals)
            net = psnr(G.synthesis(ws, noise_mode="const"), b.tgt_img)
            noop = psnr(G.synthesis(b.src_ws, noise_mode="const"), b.tgt_img)
            enc = psnr(G.synthesis(b.tgt_ws, noise_mode="const"), b.tgt_img)
        for i, mode in enumerate(b.mode):
            r = res[mode]
            r["network"].append(float(net[i]))
            r["no-op"].append(float(noop[i]))
            if b.has_tgt_ws[i]:
                r["network, bank targets"].append(float(net[i]))
                r["encoder code of target"].append(float(enc[i]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapper", default=None, help="default: the bundled mapper")
    ap.add_argument("--encoder", default=None, help="whose codes the mapper learnt "
                    "(default: the bundled mapper's encoder)")
    ap.add_argument("--train-olat", default="data/olat64")
    ap.add_argument("--train-bank", required=True, help="a latent bank of training captures (a run's BANK)")
    ap.add_argument("--train-subjects", type=int, default=12, help="its first this many subjects")
    ap.add_argument("--unseen-olat", required=True, help="captures of subjects no mapper trained on")
    ap.add_argument("--unseen-bank", required=True, help="their latent bank (built here with the training "
                    "bank's spec if the folder has none)")
    ap.add_argument("--pairs", type=int, default=384)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(bundled(GENERATOR)).eval()
    M = load_mapper(args.mapper or bundled(MAPPER)).eval()
    M.check_for(G)
    train = Bank(args.train_bank, args.train_olat, limit=args.train_subjects)
    if not (Path(args.unseen_bank) / "bank.json").is_file():
        spec = json.loads((Path(args.train_bank) / "bank.json").read_text())["spec"]
        E = load_encoder(args.encoder or bundled(MAPPER_ENCODER)).eval()
        build_bank(args.unseen_olat, args.unseen_bank, E, default_cnn(),
                   BankSpec(spec["lights_per_subject"], spec["light_pool"], spec["seed"]), progress=False)
    unseen = Bank(args.unseen_bank, args.unseen_olat)
    for name, bank in (("training subjects", train), ("unseen subjects", unseen)):
        res = measure(M, G, bank, args.pairs, args.seed)
        print(f"\n{name} ({bank.shape[0]}), PSNR dB; gap = network - encoder code of target, on bank targets")
        for mode, r in res.items():
            if r["network"]:
                gap = np.mean(r["network, bank targets"]) - np.mean(r["encoder code of target"]) \
                    if r["encoder code of target"] else float("nan")
                print(f"  {mode:8s} network {np.mean(r['network']):6.2f}  no-op {np.mean(r['no-op']):6.2f}  "
                      f"gap {gap:+6.2f}  ({len(r['network'])} pairs)")


if __name__ == "__main__":
    main()
