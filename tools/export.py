#!/usr/bin/env python
"""Export a trained encoder for downstream code: timm, Hugging Face, or a traced module.

    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --out encoder.pth              # timm
    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --format hf --out hf_encoder/  # HF folder
    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --format export --out enc.pt2  # torch.export
    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --format jit --out enc.jit     # torch.jit
    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --format onnx --out enc.onnx   # ONNX

timm (2-D patch adapters): the file loads strictly into the timm model printed at the end
(`timm.create_model(name, pretrained=False, **kwargs).load_state_dict(torch.load(...))`): patch
embedding as timm's conv, position codes as `pos_embed`, blocks and final norm; the printed
kwargs reproduce the encoder (class_token as trained, mean pooling, final norm before pooling),
so `forward_features` equals the encoder's output on all tokens. Tubelet (3-D) adapters export
the same names with a Conv3d `patch_embed.proj.weight` [D, C, t, p, p] as VideoMAE's ViT uses;
timm has no video ViT, so no timm line is printed for them.

hf: a folder for `transformers.ViTMAEModel.from_pretrained(folder)` (images) or
`VideoMAEModel.from_pretrained(folder)` (video), strict. ViTMAE always has a [CLS] token (a zero
one when the encoder has none) and its config's mask_ratio is 0; VideoMAE computes a 1-D
sinusoid position table of its own, so its features differ from this encoder's until fine-tuned.

export / jit: the bare encoder (input [B, C, *S] -> features [B, N, D], no masking), traced at
the recipe's input size (--input-shape C,*S where the adapter takes any size, as the audio
recipes do): `torch.export.load(path).module()(x)` or `torch.jit.load(path)(x)`.

onnx: the same bare encoder as an ONNX graph (opset 18, torch's dynamo exporter, which needs
`pip install 'unimask[onnx]'`): input 'input' [batch, C, *S] in the adapter's units (what its
tokenize takes: normalized floats), output 'features' [batch, N, D], every token visible (no
masking, no [CLS] row), the batch axis dynamic. When onnxruntime is installed the file is run
once on a batch of 3 and its largest difference from PyTorch printed:
`onnxruntime.InferenceSession(path).run(None, {'input': x})[0]`.
"""
from __future__ import annotations

import argparse
import sys

import torch

from unimask.cli import add_trust_pickle, load_errors
from unimask.weights.build import model_from_checkpoint

from unimask.weights.export import BareEncoder, canonical_encoder, save_hf  # noqa: E402

TIMM_NAMES = {(192, 12): "vit_tiny_patch16_224", (384, 12): "vit_small_patch16_224", (768, 12): "vit_base_patch16_224",
              (1024, 24): "vit_large_patch16_224"}


def encoder_state(model) -> tuple:
    """-> (timm-named state dict, timm create_model kwargs, timm name)."""
    state = canonical_encoder(model)
    encoder, adapter = model.encoder, model.adapter
    dim, depth = encoder.dim, len(encoder.blocks)
    has_cls = "cls_token" in state
    kwargs = dict(img_size=getattr(adapter, "img_size", None), patch_size=adapter.patch[-1], in_chans=adapter.in_chans,
                  embed_dim=dim, depth=depth, num_heads=encoder.blocks[0].attn.num_heads, class_token=has_cls,
                  global_pool="avg", fc_norm=False)
    return state, kwargs, TIMM_NAMES.get((dim, depth), "vit_base_patch16_224")


def load_into_timm(state: dict, name: str, kwargs: dict, eps: float = 1e-6):
    """Build the timm model and load strictly; the classifier head keeps timm's own init. eps:
    the encoder's LayerNorm epsilon (torch's 1e-5 in the recipes here; timm's default is 1e-6)."""
    import functools

    import timm

    model = timm.create_model(name, pretrained=False, norm_layer=functools.partial(torch.nn.LayerNorm, eps=eps),
                              **kwargs)
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)
    return model


def export_traced(model, out: str, how: str, input_shape=None) -> str:
    """Write the bare encoder (input [B, C, *S] -> features [B, N, D]) -> a line saying how to
    load it. input_shape (C, *S): the one size to trace, needed where the adapter has no fixed
    token grid (the audio recipes take any length)."""
    adapter, coords = model.adapter, None
    if input_shape is not None:
        example = torch.randn(2, *input_shape)
        try:  # the positions of that size's tokens [N, d]; tokenize also checks the size against the recipe
            coords = adapter.tokenize(example).coords[0]
        except (IndexError, KeyError, TypeError, RuntimeError) as err:  # an adapter that wants more than a tensor
            raise ValueError(f"--input-shape {','.join(map(str, input_shape))} does not fit "
                             f"{type(adapter).__name__}: {err}") from err
    elif adapter.grid_positions() is None:  # before BareEncoder, which tabulates the positions
        raise ValueError(f"{type(adapter).__name__} takes inputs of any size (no fixed token grid): "
                         f"--format {how} traces one fixed size, give it as --input-shape C,*S")
    else:
        example = torch.randn(2, adapter.in_chans, *[g * p for g, p in zip(adapter.token_grid, adapter.patch)])
    bare = BareEncoder(adapter, model.encoder, coords).eval()
    check_bare(bare, model, example)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        if how == "jit":
            torch.jit.save(torch.jit.trace(bare, example), out)
        elif how == "onnx":
            return export_onnx(bare, example, batch, out)
        else:
            torch.export.save(torch.export.export(bare, (example,), dynamic_shapes={"x": {0: batch}}), out)
    loader = "torch.jit.load" if how == "jit" else "torch.export.load(...).module"
    return f"{loader}({out!r}) maps [B, C, *S] inputs to [B, N, D] features"


def check_bare(bare, model, example: torch.Tensor) -> None:
    """The bare encoder must give the model's own all-visible features on the example: an adapter
    whose tokens are more than a patchify + projection + position code (band groups, several
    inputs) would otherwise export a different function without a word."""
    from unimask.encoders import encode_all

    adapter = model.adapter
    with torch.no_grad():
        try:
            expected = encode_all(adapter, model.encoder, {adapter.batch_key: example})[0]  # [B, N, D]
            gap = float((bare(example) - expected).abs().max()) if bare(example).shape == expected.shape else None
        except RuntimeError as err:  # shapes that do not fit the plain patchify
            raise ValueError(f"{type(adapter).__name__}: the bare encoder cannot take its input ({err})") from err
    if gap is None or gap > 1e-4:
        raise ValueError(f"{type(adapter).__name__}: its tokens are not a plain patchify + projection + position "
                         f"code, so the bare encoder would not give its features (max |difference| {gap}); "
                         "export supports grid adapters such as the image, video and audio ones")


def export_onnx(bare, example: torch.Tensor, batch, out: str) -> str:
    """The bare encoder -> an ONNX file with a dynamic batch axis, checked with onnxruntime when
    it is installed (on a batch of 3, another size than the traced example's 2)."""
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise ImportError("--format onnx needs onnx and onnxscript (torch's ONNX exporter): "
                          "pip install 'unimask[onnx]'")
    program = torch.onnx.export(bare, (example,), dynamo=True, opset_version=18, input_names=["input"],
                                output_names=["features"], dynamic_shapes={"x": {0: batch}}, verbose=False)
    program.save(out)
    line = f"onnxruntime.InferenceSession({out!r}).run(None, {{'input': x}})[0]: [B, C, *S] -> [B, N, D] features"
    if importlib.util.find_spec("onnxruntime") is None:
        return line + " (onnxruntime not installed: not run here)"
    import onnxruntime

    x = torch.randn(3, *example.shape[1:])
    theirs = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    gap = float((torch.from_numpy(theirs) - bare(x)).abs().max())
    return line + f"; onnxruntime vs PyTorch on a batch of 3: max |difference| {gap:.2e}"


def shape_arg(text: str) -> tuple:
    """'1,64,32' -> (1, 64, 32)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: channels and sizes as positive integers, e.g. 1,1024,128")
    return shape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", choices=("timm", "hf", "export", "jit", "onnx"), default="timm")
    parser.add_argument("--input-shape", type=shape_arg, default=None, metavar="C,*S",
                        help="export/jit/onnx: the input size to trace (e.g. 1,1024,128 for a 1024-frame "
                             "128-bin fbank); default the recipe's fixed size")
    parser.add_argument("--gin", action="append", default=[])
    parser.add_argument("--gin_param", action="append", default=[])
    add_trust_pickle(parser)
    args = parser.parse_args(argv)
    try:
        model, _ = model_from_checkpoint(args.checkpoint, args.gin, args.gin_param, trust_pickle=args.trust_pickle)
    except load_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model.eval()
    if args.format == "hf":
        name = save_hf(model, args.out)
        print(f"wrote {args.out}: load with transformers.{name}.from_pretrained({args.out!r})")
        return 0
    if args.format in ("export", "jit", "onnx"):
        try:
            how = export_traced(model, args.out, args.format, args.input_shape)
        except (ImportError, ValueError) as err:  # no exporter, no fixed size, a size the recipe refuses
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: {how}")
        return 0
    state, kwargs, name = encoder_state(model)
    eps = model.encoder.norm.eps
    if len(model.adapter.patch) == 2:
        state = dict(load_into_timm(state, name, kwargs, eps).state_dict())
    torch.save(state, args.out)
    print(f"wrote {args.out}: {len(state)} tensors")
    if len(model.adapter.patch) == 2:
        norm = "" if eps == 1e-6 else f", norm_layer=functools.partial(torch.nn.LayerNorm, eps={eps})"
        print(f"load with: timm.create_model({name!r}, pretrained=False, **{kwargs}{norm})"
              f".load_state_dict(torch.load({args.out!r}))")
    else:
        print("a video ViT (Conv3d tubelet embedding, VideoMAE layout); timm has no model to load it into")
    return 0


if __name__ == "__main__":
    sys.exit(main())
