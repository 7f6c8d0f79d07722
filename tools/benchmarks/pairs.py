"""The model pairs tools/bench.py compares: unimask and Hugging Face transformers building the same
MAE (VideoMAE ViT-S, image MAE ViT-B/16 or the CPU recipe's ViT), fed the same inputs and the
same mask, each trained by its own AdamW. `run_pair` times them side by side."""
from __future__ import annotations

import copy
import dataclasses

import torch

from benchmarks.measure import Timed, compare

OPTIM = dict(lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)

# ViT-S VideoMAE (issue 18): 16 x 224^2 clips, tubelets 2 x 16 x 16, 90% tube mask
VIDEO = dict(num_frames=16, img_size=224, patch=16, tubelet=2, in_chans=3, enc_dim=384, enc_depth=12, enc_heads=6,
             dec_dim=192, dec_depth=4, dec_heads=3, mlp_ratio=4.0, mask_ratio=0.9, decoder_ratio=0.5, batch=2)
# MAE ViT-B/16 at 224 px (gin/image_mae.gin) and the CPU recipe's ViT (gin/image_mae_cpu.gin)
IMAGE = {
    "base": dict(img_size=224, patch=16, in_chans=3, enc_dim=768, enc_depth=12, enc_heads=12, dec_dim=512,
                 dec_depth=8, dec_heads=16, mlp_ratio=4.0, mask_ratio=0.75, batch=8),
    "cpu": dict(img_size=28, patch=4, in_chans=1, enc_dim=192, enc_depth=6, enc_heads=3, dec_dim=128,
                dec_depth=2, dec_heads=4, mlp_ratio=4.0, mask_ratio=0.75, batch=128),
}


def hf_optimizer(model, device):
    """What transformers' Trainer builds by default: AdamW (fused on torch >= 2.8), no decay on
    biases and LayerNorm weights."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=OPTIM["lr"], betas=OPTIM["betas"],
                             fused=True)


# ---- unimask -------------------------------------------------------------------------------
def unimask_video(c: dict, dual: bool):
    from modalities.video import VideoAdapter
    from unimask.decoders import MAEDecoder
    from unimask.encoders import ViTEncoder
    from unimask.losses import MSELoss
    from unimask.masking import ConstantRatio, RunningCellMasker, TubeMasker
    from unimask.models.masked import MaskedModel
    from unimask.targets import PixelTarget

    return MaskedModel(
        VideoAdapter(num_frames=c["num_frames"], img_size=c["img_size"], patch_size=c["patch"],
                     tubelet_size=c["tubelet"], dim=c["enc_dim"]),
        TubeMasker(), ConstantRatio(c["mask_ratio"]),
        ViTEncoder(dim=c["enc_dim"], depth=c["enc_depth"], num_heads=c["enc_heads"], mlp_ratio=c["mlp_ratio"]),
        MAEDecoder(in_dim=c["enc_dim"], dim=c["dec_dim"], depth=c["dec_depth"], num_heads=c["dec_heads"],
                   mlp_ratio=c["mlp_ratio"]),
        target=PixelTarget(norm_pix=True, per_channel=True), loss=MSELoss(), mode="drop",
        decoder_masker=RunningCellMasker() if dual else None, decoder_ratio=c["decoder_ratio"])


def unimask_image(c: dict):
    """MAE as in gin/image_mae.gin, with the [CLS] token HF's ViTMAE (and MAE's code) carries."""
    from modalities.image import ImageAdapter
    from unimask.decoders import MAEDecoder
    from unimask.encoders import ViTEncoder
    from unimask.losses import MSELoss
    from unimask.masking import ConstantRatio, RandomMasker
    from unimask.models.masked import MaskedModel
    from unimask.targets import PixelTarget

    return MaskedModel(
        ImageAdapter(img_size=c["img_size"], patch_size=c["patch"], in_chans=c["in_chans"], dim=c["enc_dim"]),
        RandomMasker(), ConstantRatio(c["mask_ratio"]),
        ViTEncoder(dim=c["enc_dim"], depth=c["enc_depth"], num_heads=c["enc_heads"], mlp_ratio=c["mlp_ratio"],
                   class_token=True),
        MAEDecoder(in_dim=c["enc_dim"], dim=c["dec_dim"], depth=c["dec_depth"], num_heads=c["dec_heads"],
                   mlp_ratio=c["mlp_ratio"]),
        target=PixelTarget(norm_pix=True), loss=MSELoss(), mode="drop")


# ---- transformers --------------------------------------------------------------------------
def hf_video(c: dict):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    config = VideoMAEConfig(image_size=c["img_size"], patch_size=c["patch"], num_channels=3, num_frames=c["num_frames"],
                            tubelet_size=c["tubelet"], hidden_size=c["enc_dim"], num_hidden_layers=c["enc_depth"],
                            num_attention_heads=c["enc_heads"], intermediate_size=int(c["enc_dim"] * c["mlp_ratio"]),
                            decoder_hidden_size=c["dec_dim"], decoder_num_hidden_layers=c["dec_depth"],
                            decoder_num_attention_heads=c["dec_heads"],
                            decoder_intermediate_size=int(c["dec_dim"] * c["mlp_ratio"]),
                            norm_pix_loss=True, use_mean_pooling=False, qkv_bias=True)
    return VideoMAEForPreTraining._from_config(config, attn_implementation="sdpa")


def hf_image(c: dict):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(image_size=c["img_size"], patch_size=c["patch"], num_channels=c["in_chans"],
                          hidden_size=c["enc_dim"], num_hidden_layers=c["enc_depth"],
                          num_attention_heads=c["enc_heads"], intermediate_size=int(c["enc_dim"] * c["mlp_ratio"]),
                          decoder_hidden_size=c["dec_dim"], decoder_num_hidden_layers=c["dec_depth"],
                          decoder_num_attention_heads=c["dec_heads"],
                          decoder_intermediate_size=int(c["dec_dim"] * c["mlp_ratio"]),
                          mask_ratio=c["mask_ratio"], norm_pix_loss=True, qkv_bias=True)
    return ViTMAEForPreTraining._from_config(config, attn_implementation="sdpa")


def hf_noise(hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ViTMAE's `noise` [B, N] that makes its argsort keep exactly our visible tokens: visible
    ones in [0, 0.5), hidden ones in [1, 1.5)."""
    return hidden.float() + 0.5 * torch.rand(hidden.shape, generator=generator)


# ---- one comparison ------------------------------------------------------------------------
def unimask_step(model, optimizer, batch, forward_kwargs, precision, device):
    """One timed training step of a unimask model -> a function returning the loss.
    forward_kwargs() gives the forward's mask or generator, fresh for every step."""
    from unimask.train.precision import autocast

    def step():
        with autocast(precision, device):
            out = model(batch, **forward_kwargs())
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss
    return step


def hf_step(model, optimizer, inputs, precision, device, check=None):
    from unimask.train.precision import autocast

    def step():
        with autocast(precision, device):
            out = model(**inputs)
        if check is not None:
            check(out)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss
    return step


def checkpointed_copy(model):
    """The same weights with train.activation_checkpointing on."""
    from unimask.transformer import set_activation_checkpointing

    twin = copy.deepcopy(model)
    set_activation_checkpointing(twin, True)
    return twin


def run_pair(args, what: str) -> float:
    """Build both models for `what` ('videomae' | 'imagemae'), give them the same inputs and mask,
    time them interleaved -> unimask samples/s over HF samples/s (printed last as ratio_vs_hf)."""
    from unimask.tokens import Mask
    from unimask.optim import make_optimizer
    from unimask.train.precision import resolve_device, resolve_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    dual = getattr(args, "dual_mask", False)
    if what == "videomae":
        c = dict(VIDEO, batch=args.batch or VIDEO["batch"])
        ours, hf, unit = unimask_video(c, dual), hf_video(c), "clips"
        x = torch.randn(c["batch"], 3, c["num_frames"], c["img_size"], c["img_size"], generator=gen)
        batch = {"video": x.to(device)}
    else:
        c = dict(IMAGE[args.config], batch=args.batch or IMAGE[args.config]["batch"])
        ours, hf, unit = unimask_image(c), hf_image(c), "images"
        x = torch.randn(c["batch"], c["in_chans"], c["img_size"], c["img_size"], generator=gen)
        batch = {"image": x.to(device)}
    ours, hf = ours.to(device).train(), hf.to(device).train()

    tokens = ours.adapter.tokenize(batch)
    drawn = ours.masker(tokens, c["mask_ratio"], gen)
    hidden = drawn.masked  # [B, N] True = hidden, the same for both
    mask = Mask.from_hidden(hidden, tokens.valid_mask(), drawn.ratio)
    if what == "videomae":  # HF layout [B, T, C, H, W]
        inputs, check = {"pixel_values": batch["video"].permute(0, 2, 1, 3, 4).contiguous(),
                         "bool_masked_pos": hidden}, None
    else:
        inputs = {"pixel_values": batch["image"], "noise": hf_noise(hidden, gen).to(device)}

        def check(out):  # ViTMAE returns the mask it drew from our noise: it must be ours
            if not torch.equal(out.mask.bool(), hidden):
                raise AssertionError("ViTMAE did not hide the tokens unimask hides")
    mask_gen = torch.Generator().manual_seed(1)

    def mask_fn():
        return ours.add_decoder_mask(tokens, dataclasses.replace(mask, decode=None), mask_gen) if dual else mask

    models = [("unimask", ours)] + ([("unimask+ckpt", checkpointed_copy(ours))] if args.checkpointing else [])
    sides = [Timed(name, unimask_step(model, make_optimizer(model, OPTIM["lr"], OPTIM["weight_decay"],
                                                            OPTIM["betas"], device), batch,
                                      lambda: {"mask": mask_fn()}, precision, device)) for name, model in models]
    sides.insert(1, Timed("hf", hf_step(hf, hf_optimizer(hf, device), inputs, precision, device, check)))
    n_visible = int((~hidden[0]).sum())
    print(f"{what} ({getattr(args, 'config', 'vit-s')}): device {device}, precision {precision}, threads "
          f"{torch.get_num_threads()}, batch {c['batch']}, {tokens.num_tokens} tokens, {n_visible} visible, "
          f"torch {torch.__version__}")
    if dual:
        decode = mask_fn().decode
        print(f"dual masking (unimask only): decoder sees {int((~hidden[0] | decode[0]).sum())} of "
              f"{tokens.num_tokens} tokens, loss over {int(decode[0].sum())}")
    if args.compile:
        import time

        from unimask.train.compile import compile_stacks

        for _, model in models:
            compile_stacks(model)  # as train.compile=True does
        start = time.perf_counter()
        for side in sides:
            if side.name != "hf":
                side.step()
        print(f"torch.compile of unimask's encoder and decoder: first step {time.perf_counter() - start:.1f} s")
    rate = compare(sides, args, device, precision, c["batch"], unit)
    if args.checkpointing:
        on, off = sides[2], sides[0]
        print(f"activation checkpointing: step time {on.median / off.median:.2f}x, peak memory "
              f"{on.memory / max(1, off.memory):.2f}x ({on.memory / 2**20:.1f} vs {off.memory / 2**20:.1f} MiB); "
              f"vs HF {on.memory / max(1, sides[1].memory):.2f}x memory at {rate['unimask+ckpt'] / rate['hf']:.2f}x speed")
    ratio = rate["unimask"] / rate["hf"]
    suffix = "_dual" if dual else "_compiled" if args.compile else ""
    print(f"ratio_vs_hf{suffix}={ratio:.2f}")
    return ratio
