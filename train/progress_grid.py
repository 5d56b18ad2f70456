"""Write a training-progress PNG from a run's tensorboard sample grids (fixed latents).

Each row is the first 8 samples of the grid logged at one kimg, labelled on the left, so the
model card can show when features formed. Usage:
    python train/progress_grid.py runs/ls64/tb -o checkpoints/lightstage_stylegan2_progress.png --kimg 20,60,100,140
"""

from __future__ import annotations

import argparse
import glob
import io
from pathlib import Path

from PIL import Image, ImageDraw


def sample_grids(tb_dir: str | Path) -> dict[int, Image.Image]:
    """Every 'samples' image in the run's event files, by image count (later files win)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    grids = {}
    for f in sorted(glob.glob(str(Path(tb_dir) / "events.out.tfevents.*"))):
        acc = EventAccumulator(f, size_guidance={"images": 0, "scalars": 1})
        acc.Reload()
        if "samples" in acc.Tags()["images"]:
            for ev in acc.Images("samples"):
                grids[ev.step] = Image.open(io.BytesIO(ev.encoded_image_string)).convert("RGB")
    return grids


def progress_grid(grids: dict[int, Image.Image], kimgs: list[int], tile: int = 64, pad: int = 2,
                  per_row: int = 8, label_w: int = 40) -> Image.Image:
    """Rows of the first `per_row` tiles of each kimg's grid (tiles `tile` px, `pad` px apart)."""
    cell = tile + pad
    out = Image.new("RGB", (label_w + per_row * cell, len(kimgs) * cell + pad), "white")
    draw = ImageDraw.Draw(out)
    for r, k in enumerate(kimgs):
        grid = grids[k * 1000]
        cols = (grid.width - pad) // cell
        for i in range(per_row):
            x, y = pad + (i % cols) * cell, pad + (i // cols) * cell
            out.paste(grid.crop((x, y, x + tile, y + tile)), (label_w + i * cell, pad + r * cell))
        draw.text((2, r * cell + cell // 2 - 4), f"{k}k", fill="black")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tb_dir")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--kimg", default="20,60,100,140", help="comma-separated kimg values that have a logged grid")
    args = ap.parse_args()
    grids = sample_grids(args.tb_dir)
    kimgs = [int(k) for k in args.kimg.split(",")]
    missing = [k for k in kimgs if k * 1000 not in grids]
    if missing:
        raise SystemExit(f"no sample grid at {missing} kimg in {args.tb_dir}; logged: "
                         f"{sorted(s // 1000 for s in grids)}")
    progress_grid(grids, kimgs).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
