"""MAE decoder: project the latent, fill hidden places with a mask token, add position codes,
run a few timm Blocks and a linear head. With depth=0 and no position codes it is SimMIM's
linear head."""
from __future__ import annotations

import gin
import torch
from torch import nn

from unimask.encoders import TransformerStack
from unimask.tokens import gather_tokens


@gin.configurable
class MAEDecoder(nn.Module):
    """in_dim: encoder width; dim: decoder width; remask: hidden tokens' latents are replaced
    by the mask token before decoding (always true in drop mode, GraphMAE's re-mask in replace
    mode); use_pos: add the adapter's position code at decoder width; pos_every_block: add it
    again before every block (Point-MAE)."""

    def __init__(self, in_dim: int = 768, dim: int = 512, depth: int = 8, num_heads: int = 16,
                 mlp_ratio: float = 4.0, remask: bool = True, use_pos: bool = True, pos_every_block: bool = False):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim) if (depth or in_dim != dim) else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.body = TransformerStack(dim, depth, num_heads, mlp_ratio, pos_every_block=pos_every_block) if depth else None
        self.head = None
        self.dim, self.remask, self.use_pos = dim, remask, use_pos
        self.pos_every_block = bool(depth) and use_pos and pos_every_block  # the model then passes `pos`

    def init_head(self, out_dim: int):
        """The model sets the output width once it knows the target's."""
        self.head = nn.Linear(self.dim, out_dim)

    predicts_rows = True  # forward(out_rows=...) computes the last block and the head at those rows only

    def forward(self, x, key_valid=None, tokens=None, ids=None, out_rows=None, pos=None):
        """x [B, M, dim] -> [B, M, out_dim], or [B, S, out_dim] at out_rows [B, S]; pos [B, M, dim]
        comes with pos_every_block."""
        if self.body is not None:
            x = self.body(x, key_valid, out_rows, pos)
        elif out_rows is not None:
            x = gather_tokens(x, out_rows)
        return self.head(x)


@gin.configurable
class GNNDecoder(nn.Module):
    """GraphMAE's decoder: a bias-free linear from the encoder width (`embed`, GraphMAE's
    encoder_to_decoder), re-mask (hidden tokens' latents -> `mask_token`, zero at init as in
    GraphMAE), then `depth` message-passing layers whose last one maps to the target width.

    kind 'gat' / 'gin': message passing over Tokens.extras['edge_index'] restricted to the decoded
    tokens (the head *is* the last layer; GraphMAE uses one GAT layer with one head);
    'mlp': per-token Linear-PReLU-Dropout-Linear; 'linear': one Linear. Same interface as
    MAEDecoder: embed, mask_token, dim, remask, use_pos, init_head(out_dim), forward.
    """

    def __init__(self, in_dim: int = 512, dim: int = 512, depth: int = 1, kind: str = "gat", num_heads: int = 1,
                 feat_drop: float = 0.2, attn_drop: float = 0.1, negative_slope: float = 0.2,
                 activation: str = "prelu", remask: bool = True, use_pos: bool = False):
        super().__init__()
        if kind not in ("gat", "gin", "mlp", "linear"):
            raise ValueError(f"GNNDecoder.kind must be 'gat', 'gin', 'mlp' or 'linear', got {kind!r}")
        if depth < 1:
            raise ValueError(f"GNNDecoder.depth must be >= 1, got {depth}")
        self.embed = nn.Linear(in_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dim, self.depth, self.kind, self.remask, self.use_pos = dim, depth, kind, remask, use_pos
        self.layer_args = dict(num_heads=num_heads, attn_drop=attn_drop, negative_slope=negative_slope)
        self.feat_drop, self.activation = nn.Dropout(feat_drop), activation
        self.body, self.acts, self.head = nn.ModuleList(), nn.ModuleList(), None

    def init_head(self, out_dim: int):
        """The model sets the output width once it knows the target's."""
        from unimask.encoders import make_activation, message_passing_layer

        if self.kind == "mlp":
            self.head = nn.Sequential(nn.Linear(self.dim, self.dim), nn.PReLU(), nn.Dropout(0.2),
                                      nn.Linear(self.dim, out_dim))
            return
        if self.kind == "linear":
            self.head = nn.Linear(self.dim, out_dim)
            return
        a = self.layer_args
        self.body = nn.ModuleList([message_passing_layer(self.kind, self.dim, self.dim, a["num_heads"], a["attn_drop"],
                                                         a["negative_slope"]) for _ in range(self.depth - 1)])
        self.acts = nn.ModuleList([make_activation(self.activation) for _ in range(self.depth - 1)])
        # last layer: heads averaged, so any head count gives exactly out_dim
        self.head = message_passing_layer(self.kind, self.dim, out_dim, a["num_heads"], a["attn_drop"],
                                          a["negative_slope"], concat=False)

    def forward(self, x, key_valid=None, tokens=None, ids=None):  # [B, M, dim] -> [B, M, out_dim]
        if self.kind in ("mlp", "linear"):
            return self.head(x)
        from unimask.encoders import edges_among, scatter_slots

        if tokens is None or "edge_index" not in tokens.extras:
            raise ValueError("GNNDecoder needs Tokens.extras['edge_index'] (edges into the flattened B*N tokens)")
        key_valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if key_valid is None else key_valid
        ids = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1) if ids is None else ids
        edges = edges_among(tokens.extras["edge_index"], ids, key_valid, tokens.num_tokens)
        h = x[key_valid]  # [M', dim]
        for conv, act in zip(self.body, self.acts):
            h = act(conv(self.feat_drop(h), edges))
        return scatter_slots(self.head(self.feat_drop(h), edges), key_valid)  # [B, M, out_dim]
