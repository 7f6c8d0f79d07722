#!/usr/bin/env python
"""Pictures of masks and reconstructions.

  # every masker that fits the recipe's token layout, on one sample of its data set
  python tools/visualize.py masks --gin gin/video_mae.gin [--gin gin/smoke.gin] [--gin_param ...] --out masks.png
  # input | masked | reconstruction of a trained model, rebuilt from its checkpoint's own config
  python tools/visualize.py recon --checkpoint runs/x/checkpoints/last.pt [--gin ...] [--gin_param ...] --out recon.png

Grid tokens with a patch layout (images, tubelets) are drawn directly, hidden patches in
grey: one tile per masker for 2-D grids, one row of time slots per masker for 3-D grids.
Other layouts fall back to the adapter's own `render` (PNG) per masker, stacked.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import List, Optional, Tuple

import gin
import numpy as np
import torch
from PIL import Image, ImageDraw

from unimask.cli import add_trust_pickle, load_errors, parse_gin
from unimask.weights.build import model_from_checkpoint

GREY = 0.5
TILE_MIN = 180  # pixels: tiny tiles are upscaled so labels fit


# ---- data -------------------------------------------------------------------------------
def one_batch(dataset, size: int = 1, seed: int = 0):
    """The first `size` items, seeded like the trainer's sampler, collated as the trainer does."""
    from unimask.data import SampleDataset

    keys = [(i % len(dataset), seed + i) if isinstance(dataset, SampleDataset) else i % len(dataset)
            for i in range(size)]
    collate = getattr(dataset, "collate", None) or torch.utils.data.default_collate
    batch = collate([dataset[key] for key in keys])
    if isinstance(batch, dict):
        batch.pop("n_bad", None)
    return batch


def configured(name: str):
    """Instantiate the gin-bound object `name` (e.g. 'train.dataset')."""
    return gin.query_parameter(name).scoped_configurable_fn()


# ---- which maskers fit these tokens ------------------------------------------------------
def applicable_maskers(tokens, recipe_masker=None) -> List[Tuple[str, object]]:
    """(label, masker) for every fixed-rule masker that fits the token layout."""
    from unimask import masking as M

    found = []
    if recipe_masker is not None and not getattr(recipe_masker, "needs_features", False):
        found.append((f"recipe: {type(recipe_masker).__name__}", recipe_masker))
    found.append(("random (MAE)", M.RandomMasker()))
    grid = tuple(tokens.grid) if tokens.grid is not None else None
    if grid is not None and len(grid) in (2, 3):
        places = grid[-2] * grid[-1]
        if all(g % 2 == 0 for g in grid[-2:]):
            found.append(("2x2 cells (SimMIM)", M.RandomMasker(unit=(1,) * (len(grid) - 2) + (2, 2))))
        found.append(("block (BEiT)", M.BlockMasker(min_block=min(16, max(2, places // 10)))))
        if len(grid) == 3 and grid[0] > 1:
            found += [("block 3-D", M.BlockMasker(min_block=min(16, max(2, places // 10)), mode="cube")),
                      ("tube (VideoMAE)", M.TubeMasker()), ("frame", M.FrameMasker()),
                      ("time spans", M.SpanMasker(axis=0))]
        found.append(("running cell (v2)", M.RunningCellMasker()))
        found += [(f"{colour} noise (ColorMAE)", M.NoiseMasker(colour=colour)) for colour in M.noise.COLOURS]
    found.append(("nearest block (Point-MAE)", M.PointBlockMasker()))
    found.append(("spans (SpanBERT)", M.SpanMasker()))
    if tokens.group is not None:
        found += [("groups independent (SatMAE)", M.ChannelGroupMasker("independent")),
                  ("groups consistent (SatMAE)", M.ChannelGroupMasker("consistent")),
                  ("Dirichlet budget (MultiMAE)", M.DirichletMasker())]
    if recipe_masker is not None:  # the recipe's masker is shown once, first
        same = (type(recipe_masker), vars(recipe_masker))
        found = found[:1] + [(label, m) for label, m in found[1:] if (type(m), vars(m)) != same]
    return found


# ---- drawing grid tokens ------------------------------------------------------------------
def drawable(tokens) -> bool:
    """Grid tokens whose patches are laid out as (*patch per grid axis, channels)."""
    grid, shape = tokens.grid, tokens.patch_shape
    return (grid is not None and shape is not None and len(grid) in (2, 3) and len(shape) == len(grid) + 1
            and int(np.prod(shape)) == tokens.patches.shape[-1])


def to_frames(patches: torch.Tensor, grid: tuple, patch_shape: tuple) -> torch.Tensor:
    """One sample's patches [N, P] -> frames [F, 3, H, W] (F = 1 for a 2-D grid; one frame per
    time slot for a 3-D grid), the patch layout being (*patch, channels) per grid axis."""
    k = len(grid)
    x = patches.reshape(*grid, *patch_shape)  # [g1.., p1.., C]
    order = [i for axis in range(k) for i in (axis, k + axis)] + [2 * k]
    x = x.permute(*order).reshape(*[g * p for g, p in zip(grid, patch_shape)], patch_shape[-1])
    if k == 2:
        x = x[None]  # [1, H, W, C]
    else:
        x = x[:: patch_shape[0]]  # first frame of every time slot
    channels = x.shape[-1]
    x = x[..., :3] if channels >= 3 else x[..., :1].expand(*x.shape[:-1], 3)
    return x.permute(0, 3, 1, 2)


def masked_frames(tokens, hidden: Optional[torch.Tensor], lo: float, hi: float) -> torch.Tensor:
    """Sample 0 scaled to [0, 1] with hidden patches grey. hidden [N] bool|None -> [F, 3, H, W]."""
    patches = ((tokens.patches[0].float() - lo) / max(hi - lo, 1e-6)).clamp(0, 1)  # [N, P]
    if hidden is not None:
        patches = torch.where(hidden[:, None], torch.full_like(patches, GREY), patches)
    return to_frames(patches, tuple(tokens.grid), tuple(tokens.patch_shape))


def to_pil(frame: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> PIL image, upscaled (nearest) to at least TILE_MIN wide."""
    img = Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    scale = max(1, math.ceil(TILE_MIN / img.width))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def compose(panels: List[Tuple[str, List[Image.Image]]], columns: int) -> Image.Image:
    """Labelled panels -> one sheet. Single-tile panels are laid out `columns` per row; panels of
    several tiles (time strips) take one row each."""
    pad, label_h = 4, 14
    tile_w = max(t.width for _, tiles in panels for t in tiles)
    tile_h = max(t.height for _, tiles in panels for t in tiles)
    per_row = max(len(tiles) for _, tiles in panels)
    strips = per_row > 1
    cols = per_row if strips else min(columns, len(panels))
    rows = len(panels) if strips else math.ceil(len(panels) / cols)
    sheet = Image.new("RGB", (cols * (tile_w + pad) + pad, rows * (tile_h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, tiles) in enumerate(panels):
        row, col = (index, 0) if strips else divmod(index, cols)
        y = pad + row * (tile_h + label_h + pad)
        draw.text((pad + col * (tile_w + pad), y), label, fill="black")
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (pad + (col + j) * (tile_w + pad), y + label_h))
    return sheet


def rendered_panels(adapter, tokens, masks) -> List[Tuple[str, List[Image.Image]]]:
    """Layouts we cannot draw: the adapter's own render of each mask (input | masked | input)."""
    panels = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (label, mask) in enumerate(masks):
            path = adapter.render(tokens, adapter.target(tokens), mask, os.path.join(folder, f"{i}.png"))
            if not str(path).endswith(".png"):
                raise NotImplementedError(f"{type(adapter).__name__}.render writes {path}, not a PNG")
            with Image.open(path) as img:
                panels.append((label, [img.convert("RGB").copy()]))
    return panels


# ---- subcommands --------------------------------------------------------------------------
def draw_masks(args) -> str:
    parse_gin(args.gin, args.gin_param)
    dataset = configured("train.dataset")
    adapter = configured("MaskedModel.adapter")
    schedule = configured("MaskedModel.schedule")
    recipe_masker = configured("MaskedModel.masker")
    ratio = args.ratio if args.ratio is not None else float(schedule(0.0, 1)[0])
    tokens = adapter.tokenize(one_batch(dataset, seed=args.seed))
    tokens = tokens.replace(patches=tokens.patches[:1], coords=tokens.coords[:1],
                            valid=None if tokens.valid is None else tokens.valid[:1])
    masks = []
    for label, masker in applicable_maskers(tokens, recipe_masker):
        try:
            masks.append((label, masker(tokens, ratio, torch.Generator().manual_seed(args.seed))))
        except ValueError as err:  # e.g. groups of unequal size for the consistent mode
            print(f"skipped {label}: {err}", file=sys.stderr)
    if drawable(tokens):
        lo, hi = float(tokens.patches[0].min()), float(tokens.patches[0].max())
        panels = [("input", [to_pil(f) for f in masked_frames(tokens, None, lo, hi)])]
        panels += [(f"{label} {ratio:.2f}", [to_pil(f) for f in masked_frames(tokens, mask.masked[0], lo, hi)])
                   for label, mask in masks]
        columns = 4
    else:  # the adapter's pictures are already wide (input | masked | reconstruction): one per row
        panels, columns = rendered_panels(adapter, tokens, masks), 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    compose(panels, columns=columns).save(args.out)
    print(f"wrote {args.out}: {len(masks)} maskers at ratio {ratio:.2f}")
    return args.out


@torch.no_grad()
def draw_recon(args) -> str:
    model, state = model_from_checkpoint(args.checkpoint, args.gin, args.gin_param, trust_pickle=args.trust_pickle)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    from unimask.data import to_device

    batch = to_device(one_batch(configured("train.dataset"), size=args.batch, seed=args.seed), device)
    progress = state.get("step", 0) / max(1, gin.query_parameter("train.steps"))
    out = model(batch, progress=progress, generator=torch.Generator().manual_seed(args.seed))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    try:
        path = model.render(batch, out, args.out)
    except NotImplementedError as err:  # latent targets: no reconstruction to show
        raise SystemExit(f"error: {args.checkpoint}: {err}")
    print(f"wrote {path}: step {state.get('step')}, loss {float(out.loss):.4f}")
    return path


@torch.no_grad()
def draw_cross(args) -> str:
    """A cross-modal model's prediction of all of --target from --source alone: every token of
    the target hidden, every token of the source visible, the other modalities left out."""
    from unimask.data import to_device
    from unimask.models.multimodal import MultiMask
    from unimask.tokens import Mask

    model, state = model_from_checkpoint(args.checkpoint, args.gin, args.gin_param, trust_pickle=args.trust_pickle)
    if not hasattr(model, "names") or {args.source, args.target} - set(model.names):
        raise SystemExit(f"error: {args.checkpoint} is not a cross-modal model with modalities {args.source!r} and "
                         f"{args.target!r}" + (f" (it has {model.names})" if hasattr(model, "names") else ""))
    model.eval()
    batch = to_device(one_batch(configured("train.dataset"), size=args.batch, seed=args.seed), torch.device("cpu"))
    tokens = model.tokenize(batch)
    masks = MultiMask()
    for name, t in tokens.items():
        valid = t.valid_mask() & (name in (args.source, args.target))
        hidden = valid if name == args.target else torch.zeros_like(valid)
        masks[name] = Mask.from_hidden(hidden, valid, hidden.float().mean(1))
    out = model(batch, mask=masks)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    pred = model.targets[args.target].invert(model.full_prediction(out, args.target), tokens[args.target],
                                             model.adapters[args.target])
    path = model.adapters[args.target].render(tokens[args.target], pred, masks[args.target], args.out)
    print(f"wrote {path}: all of {args.target!r} predicted from {args.source!r} alone, step {state.get('step')}, "
          f"{args.target} loss {float(out.terms[args.target]):.4f}")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    masks = sub.add_parser("masks", help="every applicable masker on one sample of the recipe's data")
    masks.add_argument("--gin", action="append", required=True, help="recipe gin file (repeatable)")
    masks.add_argument("--ratio", type=float, default=None, help="mask ratio (default: the recipe's schedule at 0)")
    recon = sub.add_parser("recon", help="input | masked | reconstruction from a checkpoint")
    recon.add_argument("--checkpoint", required=True, help="<run>/checkpoints/last.pt")
    recon.add_argument("--gin", action="append", default=[], help="extra gin file (repeatable)")
    recon.add_argument("--batch", type=int, default=1, help="samples to run (the picture shows the first)")
    recon.add_argument("--device", default="auto")
    cross = sub.add_parser("cross", help="a cross-modal model: all of --target predicted from --source alone")
    cross.add_argument("--checkpoint", required=True, help="<run>/checkpoints/last.pt of a MultiModalModel")
    cross.add_argument("--source", required=True, help="the modality the encoder sees")
    cross.add_argument("--target", required=True, help="the modality predicted from it, wholly hidden")
    cross.add_argument("--gin", action="append", default=[], help="extra gin file (repeatable)")
    cross.add_argument("--batch", type=int, default=1)
    for p in (recon, cross):
        add_trust_pickle(p)
    for p in (masks, recon, cross):
        p.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
        p.add_argument("--out", required=True, help="PNG to write")
        p.add_argument("--seed", type=int, default=0, help="sample augmentation and mask seed")
    args = parser.parse_args(argv)
    try:
        {"masks": draw_masks, "recon": draw_recon, "cross": draw_cross}[args.command](args)
    except load_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
