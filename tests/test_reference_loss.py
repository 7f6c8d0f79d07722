"""unimask's loss equals a straightforward reference of the same math, so speed-ups in the
core (target only on scored tokens, fused loss, decode without full copies) cannot change
what is learned.

The reference is written out by hand below, per sample, from the model's own weights:
patchify, norm-pix target (per patch, or per channel for tubelets), visible-only ViT encoder
(LayerNorm, softmax attention, GELU MLP), mask tokens + sin-cos positions, decoder on all
tokens (or visible + decode-selected with dual masking), MSE on the scored tokens.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from modalities.image import ImageAdapter
from modalities.video import VideoAdapter
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder
from unimask.losses import MSELoss
from unimask.masking import ConstantRatio, RandomMasker, TubeMasker
from unimask.models.masked import MaskedModel
from unimask.targets import PixelTarget
from unimask.tokens import Mask


# ---- the reference ---------------------------------------------------------------------------
def ref_patchify(x, patch):
    """[B, C, *S] -> [B, N, prod(patch) * C], patch pixels then channels (MAE / VideoMAE order)."""
    b, c = x.shape[:2]
    grid = [s // p for s, p in zip(x.shape[2:], patch)]
    split = [b, c] + [v for g, p in zip(grid, patch) for v in (g, p)]  # b c g0 p0 g1 p1 ...
    x = x.reshape(split)
    d = len(patch)
    order = [0] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)] + [1]  # b g.. p.. c
    return x.permute(order).reshape(b, math.prod(grid), math.prod(patch) * c), grid


def ref_coords(grid):
    """Row-major grid index of every token: [N, len(grid)] float."""
    axes = torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij")
    return torch.stack([a.flatten() for a in axes], -1)


def ref_sincos(coords, dim):
    """Each axis: sin | cos of coord * 1/10000^(i/half), axes concatenated, zero-padded to dim."""
    per_axis = (dim // coords.shape[-1]) // 2 * 2
    half = per_axis // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    parts = []
    for axis in range(coords.shape[-1]):
        angles = coords[:, axis:axis + 1] * omega  # [N, half]
        parts += [angles.sin(), angles.cos()]
    codes = torch.cat(parts, -1)
    return F.pad(codes, (0, dim - codes.shape[-1]))


def ref_norm_pix(patches, channels, per_channel):
    """MAE: (x - mean) / sqrt(var + eps) per patch; VideoMAE: (x - mean) / (std + eps) per channel."""
    if per_channel:
        g = patches.reshape(*patches.shape[:-1], -1, channels)  # [..., pixels, C]
        mean, var = g.mean(-2, keepdim=True), g.var(-2, unbiased=True, keepdim=True)
        return ((g - mean) / (var.sqrt() + 1e-6)).reshape(patches.shape)
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, unbiased=True, keepdim=True)
    return (patches - mean) / (var + 1e-6).sqrt()


def linear(x, layer):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def ref_block(block, x):
    """One pre-norm ViT block on the tokens of one sample: x [K, D] -> [K, D]."""
    k, d = x.shape
    heads = block.attn.num_heads
    h = F.layer_norm(x, (d,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q, key, v = linear(h, block.attn.qkv).view(k, 3, heads, d // heads).permute(1, 2, 0, 3)  # [heads, K, hd]
    attn = (q @ key.transpose(-1, -2) / math.sqrt(d // heads)).softmax(-1)
    x = x + linear((attn @ v).transpose(0, 1).reshape(k, d), block.attn.proj)
    h = F.layer_norm(x, (d,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    return x + linear(F.gelu(linear(h, block.mlp.fc1)), block.mlp.fc2)


def ref_stack(stack, x):
    for block in stack.blocks:
        x = ref_block(block, x)
    return F.layer_norm(x, x.shape[-1:], stack.norm.weight, stack.norm.bias, stack.norm.eps)


def reference_loss(model, x, patch, masked, decode=None, per_channel=False):
    """x [B, C, *S], masked [B, N] (True = hidden), decode [B, N] (dual masking) -> loss."""
    channels = x.shape[1]
    patches, grid = ref_patchify(x, patch)
    target = ref_norm_pix(patches, channels, per_channel)
    coords = ref_coords(grid)
    enc, dec = model.encoder, model.decoder
    total, count = 0.0, 0
    for b in range(x.shape[0]):
        visible = torch.nonzero(~masked[b]).squeeze(1)  # [K] in token order
        h = linear(patches[b, visible], model.adapter.proj) + ref_sincos(coords[visible], enc.dim)
        latent = ref_stack(enc.body if hasattr(enc, "body") else enc, h)  # [K, D]
        full = dec.mask_token[0, 0].expand(masked.shape[1], -1).clone()  # [N, Dd]
        full[visible] = linear(latent, dec.embed)
        full = full + ref_sincos(coords, dec.dim)
        scored = masked[b] if decode is None else masked[b] & decode[b]
        seen = ~masked[b] | scored  # the decoder's tokens
        seen_ids = torch.nonzero(seen).squeeze(1)
        pred = linear(ref_stack(dec.body, full[seen_ids]), dec.head)  # [M, T]
        err = ((pred - target[b, seen_ids]) ** 2).mean(-1)  # [M]
        total = total + err[scored[seen_ids]].sum()
        count += int(scored.sum())
    return total / count


# ---- the models ----------------------------------------------------------------------------
def image_model():
    adapter = ImageAdapter(img_size=16, patch_size=4, in_chans=3, dim=32)
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.75), ViTEncoder(dim=32, depth=2, num_heads=2),
                       MAEDecoder(in_dim=32, dim=24, depth=2, num_heads=2), target=PixelTarget(norm_pix=True),
                       loss=MSELoss())


def video_model(decoder_masker=None):
    adapter = VideoAdapter(num_frames=4, img_size=16, patch_size=4, tubelet_size=2, dim=32)
    return MaskedModel(adapter, TubeMasker(), ConstantRatio(0.75), ViTEncoder(dim=32, depth=2, num_heads=4),
                       MAEDecoder(in_dim=32, dim=24, depth=2, num_heads=2),
                       target=PixelTarget(norm_pix=True, per_channel=True), loss=MSELoss(),
                       decoder_masker=decoder_masker, decoder_ratio=0.5)


def decoder_masker():
    import unimask.masking as masking

    return masking.RunningCellMasker() if hasattr(masking, "RunningCellMasker") else RandomMasker()


def check_same_loss_and_grads(model, batch, x, patch, mask, per_channel):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model(batch, mask=mask).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    ref = reference_loss(model, x, patch, mask.masked, mask.decode, per_channel)
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6), (float(loss), float(ref))
    for p, g, r in zip(params, grads, ref_grads):
        g = torch.zeros_like(p) if g is None else g
        r = torch.zeros_like(p) if r is None else r
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6), float((g - r).abs().max())


# ---- tests ---------------------------------------------------------------------------------
def test_image_loss_matches_reference():
    torch.manual_seed(0)
    model = image_model()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    batch = {"image": x}
    mask = model.make_mask(model.adapter.tokenize(batch), 0.0, torch.Generator().manual_seed(2))
    check_same_loss_and_grads(model, batch, x, (4, 4), mask, per_channel=False)


def test_tubelet_loss_matches_reference():
    torch.manual_seed(0)
    model = video_model()
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.2
    batch = {"video": x}
    tokens = model.adapter.tokenize(batch)
    hidden = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(2)).masked
    mask = Mask.from_hidden(hidden, tokens.valid_mask(), torch.full((2,), 0.75))  # as tools/bench.py passes it
    check_same_loss_and_grads(model, batch, x, (2, 4, 4), mask, per_channel=True)


def test_dual_masking_loss_matches_reference():
    torch.manual_seed(0)
    model = video_model(decoder_masker())
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    batch = {"video": x}
    mask = model.make_mask(model.adapter.tokenize(batch), 0.0, torch.Generator().manual_seed(4))
    assert mask.decode is not None and bool((mask.decode & ~mask.masked).sum() == 0)
    assert 0 < int(mask.decode.sum()) < int(mask.masked.sum())  # the decoder skips some hidden tokens
    check_same_loss_and_grads(model, batch, x, (2, 4, 4), mask, per_channel=True)


@pytest.mark.parametrize("per_channel", [False, True])
def test_target_rows_equal_full_target(per_channel):
    """PixelTarget.select (gather first, normalize after) = forward() then gather."""
    model = video_model()
    model.target.per_channel = per_channel
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    tokens = model.adapter.tokenize({"video": x})
    ids = torch.tensor([[0, 5, 7], [31, 2, 2]])
    full, _ = model.target(tokens, model.adapter)
    rows, _ = model.target.select(tokens, model.adapter, ids)
    assert torch.allclose(rows, torch.gather(full, 1, ids[..., None].expand(-1, -1, full.shape[-1])), atol=1e-6)
    patches, _ = ref_patchify(x, (2, 4, 4))
    assert torch.allclose(full, ref_norm_pix(patches, 3, per_channel), atol=1e-5)
