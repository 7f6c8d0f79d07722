"""The transformer body shared by the ViT encoder and the MAE decoder: timm Blocks, SDPA.

RowBlock is timm's Block with one more ability (computing only some output rows, for the last
decoder block); TransformerStack is a stack of them plus a final norm, with padding masks and
the CPU attention-kernel choice below.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from unimask.rope import rotate
from unimask.tokens import gather_tokens

# Below this many tokens, bf16/fp16 attention on a CPU runs faster (forward + backward) as plain
# matmul + softmax than in SDPA's flash kernel, whose backward has a high per-(batch, head) cost:
# e.g. 49 tokens x 4 heads x batch 128: 17 vs 50 ms; 157 tokens (the benchmark encoder's)
# 3.0 vs 4.5 ms, 400 tokens 17 vs 14 ms (tools/bench.py attention). fp32 and CUDA keep SDPA's choice.
CPU_LOW_PRECISION_MATH_BELOW = 192


def attention_backend(x: torch.Tensor):
    """A context that picks the SDPA kernel for a sequence x [B, K, D] (see above)."""
    if x.device.type == "cpu" and x.shape[1] < CPU_LOW_PRECISION_MATH_BELOW:
        low = x.dtype in (torch.bfloat16, torch.float16) or (
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16))
        if low:
            return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def key_padding_mask(key_valid: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """[B, K] bool -> [B, 1, 1, K] bool for SDPA, or None when nothing is padded (fast path).
    While compiling, the mask is used as given: the compiled stacks get None for an unpadded
    batch from unimask/train/compile.py, and the check would split the trace (a dynamo break)."""
    if key_valid is None:
        return None
    if not torch.compiler.is_compiling() and bool(key_valid.all()):
        return None
    return key_valid[:, None, None, :]


class RowBlock(Block):
    """timm's Block that can compute its output at some rows only: forward(x, attn_mask, out_rows)
    with rows [B, S] -> [B, S, D], equal to gather(block(x), rows). Keys and values still come
    from all K tokens; queries, projection and MLP run on the S rows (the last decoder block needs
    only the rows that are scored). It is the Block's own forward, so wrappers that hook a
    module's forward (FSDP's all-gather of the block's shards, torch.compile) see every call."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                out_rows: Optional[torch.Tensor] = None, rope: Optional[tuple] = None) -> torch.Tensor:
        """rope: (cos, sin, axes) from unimask/rope.py: queries and keys rotated by their positions."""
        if out_rows is None and rope is None:
            return super().forward(x, attn_mask=attn_mask)
        if getattr(self.attn, "gate", None) is not None:  # timm: an Attention variant this path does not cover
            if rope is not None:
                raise ValueError("rotary positions need timm's plain Attention (no gate)")
            return gather_tokens(super().forward(x, attn_mask=attn_mask), out_rows)
        attn = self.attn
        batch, k, _ = x.shape
        s, width, heads, head_dim = k if out_rows is None else out_rows.shape[1], attn.attn_dim, attn.num_heads, \
            attn.head_dim
        h = self.norm1(x)
        weight, bias = attn.qkv.weight, attn.qkv.bias
        queries = h if out_rows is None else gather_tokens(h, out_rows)
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
        kv = F.linear(h, weight[width:], None if bias is None else bias[width:])
        q = q.view(batch, s, heads, head_dim).transpose(1, 2)  # [B, H, S, hd]
        key, value = kv.view(batch, k, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, K, hd] each
        q, key = attn.q_norm(q), attn.k_norm(key)
        if rope is not None:
            cos, sin, axes = rope  # [B, 1, K, hd] each
            key = rotate(key, cos, sin, axes)
            if out_rows is not None:
                index = out_rows[:, None, :, None].expand(-1, 1, -1, head_dim)
                cos, sin = torch.gather(cos, 2, index), torch.gather(sin, 2, index)
            q = rotate(q, cos, sin, axes)
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask,
                                             dropout_p=attn.attn_drop.p if self.training else 0.0)
        out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, s, width))))
        x = (x if out_rows is None else gather_tokens(x, out_rows)) + self.drop_path1(self.ls1(out))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def window_masks(coords: torch.Tensor, window, depth: int, shift: bool = True) -> list:
    """Local attention over a grid, Swin-style: tokens attend within windows of `window` grid
    cells; with `shift`, every second block's windows move by half a window along the first grid
    axis (AudioMAE's decoder: window (4, 4), shift (2, 0)). Shifted windows at the border are cut,
    not wrapped, which is what Swin's roll + mask computes. An attention mask, not a kernel of our
    own: the blocks stay timm's. coords [B, K, d] integer grid positions -> depth masks
    [B, 1, K, K] bool (True = may attend)."""
    window = torch.as_tensor(window, device=coords.device)
    offsets = torch.zeros_like(window)
    offsets[0] = window[0] // 2  # the shift of the odd blocks, along the first axis
    plain = torch.div(coords.long(), window, rounding_mode="floor")  # [B, K, d] window index per axis
    moved = torch.div(coords.long() + offsets, window, rounding_mode="floor")
    same = [(ids[:, :, None, :] == ids[:, None, :, :]).all(-1)[:, None] for ids in (plain, moved)]  # [B, 1, K, K]
    return [same[1] if shift and i % 2 else same[0] for i in range(depth)]


def block_in_backend(block: nn.Module, x, mask, out_rows, rope) -> torch.Tensor:
    """One block inside its own `attention_backend` context. Why: a checkpointed block is
    recomputed in backward, outside the forward's context; without re-entering it, a short bf16
    sequence would be recomputed with another SDPA kernel than the forward used (CheckpointError:
    the recomputed tensors differ)."""
    with attention_backend(x):
        return block(x, attn_mask=mask, out_rows=out_rows, rope=rope)


def set_activation_checkpointing(model: nn.Module, on: bool = True) -> int:
    """Turn recomputation of every TransformerStack block in backward on or off (memory for
    compute; train.activation_checkpointing) -> how many stacks were switched."""
    stacks = [m for m in model.modules() if isinstance(m, TransformerStack)]
    for stack in stacks:
        stack.grad_checkpointing = on
    return len(stacks)


class TransformerStack(nn.Module):
    """timm Blocks + final norm: the body shared by the ViT encoder and the MAE decoder."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True, pos_every_block: bool = False,
                 norm_eps: float = 1e-5):
        """norm_eps: LayerNorm's epsilon; timm's ViT and the MAE/VideoMAE code use 1e-6, which a
        model loading their weights should match (the recipes here keep torch's 1e-5)."""
        super().__init__()
        self.pos_every_block = pos_every_block  # the model then passes `pos` to forward
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList([
            RowBlock(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=rate,
                     norm_layer=functools.partial(nn.LayerNorm, eps=norm_eps))
            for rate in rates
        ])
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if depth else nn.Identity()
        self.dim = dim
        self.grad_checkpointing = False  # train.activation_checkpointing: recompute blocks in backward

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None,
                out_rows: Optional[torch.Tensor] = None, pos: Optional[torch.Tensor] = None,
                block_masks: Optional[list] = None, rope: Optional[tuple] = None) -> torch.Tensor:
        """x [B, K, D] -> [B, K, D], or [B, S, D] at out_rows [B, S] (the last block computes only those).

        pos [B, K, D]: position codes added again before every block after the first (x comes
        with them added once), as Point-MAE and Point-BERT do, so deep layers keep seeing where
        each token is: with irregular coordinates there is no grid order to fall back on.
        block_masks: one [B, 1, K, K] bool attention mask per block (True = may attend; local
        window attention), combined with the padding mask. rope: rotary angles for every block
        (unimask/rope.py), applied to queries and keys inside attention."""
        attn_mask = key_padding_mask(key_valid)  # [B, 1, 1, K] | None
        with attention_backend(x):
            for i, block in enumerate(self.blocks):
                last = i == len(self.blocks) - 1
                if pos is not None and i > 0:
                    x = x + pos
                mask = attn_mask
                if block_masks is not None:
                    mask = block_masks[i] if attn_mask is None else block_masks[i] & attn_mask
                    if last and out_rows is not None:  # queries at the scored rows only
                        mask = torch.gather(mask, 2, out_rows[:, None, :, None].expand(-1, 1, -1, mask.shape[-1]))
                x = self.run_block(block, x, mask, out_rows if last else None, rope)
        if out_rows is not None and not self.blocks:
            x = gather_tokens(x, out_rows)
        return self.norm(x)

    def run_block(self, block, x, mask, out_rows, rope):
        """One block; with grad_checkpointing its activations are not kept but recomputed in the
        backward pass (torch.utils.checkpoint, RNG state preserved: memory for compute)."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block_in_backend, block, x, mask, out_rows, rope,
                                                     use_reentrant=False)
        return block(x, attn_mask=mask, out_rows=out_rows, rope=rope)

    def block_outputs(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None,
                      pos: Optional[torch.Tensor] = None, rope: Optional[tuple] = None) -> list:
        """Every block's output [B, K, D] (before the final norm), first to last: the layers a
        data2vec teacher averages."""
        attn_mask, outputs = key_padding_mask(key_valid), []
        with attention_backend(x):
            for i, block in enumerate(self.blocks):
                if pos is not None and i > 0:
                    x = x + pos
                x = self.run_block(block, x, attn_mask, None, rope)
                outputs.append(x)
        return outputs
