"""MAE decoder: project the latent, fill hidden places with a mask token, add position codes,
run a few timm Blocks and a linear head. With depth=0 and no position codes it is SimMIM's
linear head."""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import torch
from torch import nn

from unimask.interfaces import Decoder, DecoderSpec
from unimask.tokens import gather_tokens
from unimask.transformer import TransformerStack, window_masks


@gin.configurable
class MAEDecoder(Decoder):
    """in_dim: encoder width; dim: decoder width; remask: hidden tokens' latents are replaced
    by the mask token before decoding (always true in drop mode, GraphMAE's re-mask in replace
    mode); use_pos: add the adapter's position code at decoder width; pos_every_block: add it
    again before every block (Point-MAE). window: local attention within windows of that many
    grid cells (Tokens.coords as grid positions), shifted by half a window along the first axis
    in every second block when shift_windows (AudioMAE's local decoder: window (4, 4)); None =
    global attention. norm_eps: 1e-6 to match MAE's / VideoMAE's released decoders."""

    def __init__(self, in_dim: int = 768, dim: int = 512, depth: int = 8, num_heads: int = 16,
                 mlp_ratio: float = 4.0, remask: bool = True, use_pos: bool = True, pos_every_block: bool = False,
                 window: Optional[Sequence[int]] = None, shift_windows: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        if window is not None and (not window or any(int(w) < 1 for w in window)):
            raise ValueError(f"MAEDecoder.window={window!r}: grid cells per window axis, each >= 1")
        self.shift_windows = shift_windows
        self.embed = nn.Linear(in_dim, dim) if (depth or in_dim != dim) else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.body = TransformerStack(dim, depth, num_heads, mlp_ratio, pos_every_block=pos_every_block,
                                     norm_eps=norm_eps) if depth else None
        self.head = None
        self.dim = dim
        # with depth 0 there are no blocks to give `pos` to; predicts_rows: the last block and the
        # head compute only the rows the loss scores
        self.spec = DecoderSpec(remask=remask, use_pos=use_pos, pos_every_block=bool(depth) and use_pos and pos_every_block,
                                predicts_rows=True, window=tuple(int(w) for w in window) if window else None)

    def init_head(self, out_dim: int):
        """The model sets the output width once it knows the target's."""
        self.head = nn.Linear(self.dim, out_dim)

    def forward(self, x, key_valid=None, tokens=None, ids=None, out_rows=None, pos=None):
        """x [B, M, dim] -> [B, M, out_dim], or [B, S, out_dim] at out_rows [B, S]; pos [B, M, dim]
        comes with pos_every_block."""
        if self.body is not None:
            masks = None
            window = self.spec.window
            if window is not None:
                coords = gather_tokens(tokens.coords, ids)  # [B, M, d] grid positions of the rows
                if coords.shape[-1] != len(window):
                    raise ValueError(f"MAEDecoder.window={window} has {len(window)} axes, the tokens' "
                                     f"coords have {coords.shape[-1]}")
                masks = window_masks(coords, window, len(self.body.blocks), self.shift_windows)
            x = self.body(x, key_valid, out_rows, pos, masks)
        elif out_rows is not None:
            x = gather_tokens(x, out_rows)
        return self.head(x)
