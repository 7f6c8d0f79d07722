"""Message passing over the token edges (Tokens.extras[EDGE_INDEX]): GraphMAE's GAT / GIN
encoder and decoder, on PyG layers. Both see only the edges among the tokens they are given
(`edges_among`), so in drop mode a hidden token and every edge touching it are absent.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
from torch import nn

from unimask.interfaces import Decoder, DecoderSpec, Encoder
from unimask.tokens import edges_among


def slots_and_edges(x: torch.Tensor, key_valid, tokens, ids, who: str) -> tuple:
    """Defaults for a message-passing call: (key_valid [B, K], edges among the valid slots [2, E'])."""
    if tokens is None:
        raise ValueError(f"{who} needs the batch's Tokens (for their edges)")
    key_valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if key_valid is None else key_valid
    ids = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1) if ids is None else ids
    return key_valid, edges_among(tokens, ids, key_valid)


def scatter_slots(values: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """values [M, C] of the valid slots -> [B, K, C], zeros on padding slots."""
    out = values.new_zeros(*key_valid.shape, values.shape[-1])
    out[key_valid] = values
    return out


def make_activation(name: str) -> nn.Module:
    """'prelu' (GraphMAE: one learned slope), 'relu', 'elu', 'gelu' or 'none'."""
    layers = {"prelu": nn.PReLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "none": nn.Identity}
    if name not in layers:
        raise ValueError(f"activation must be one of {sorted(layers)}, got {name!r}")
    return layers[name]()


def make_norm(name: Optional[str], dim: int) -> nn.Module:
    """None, 'layer' or 'batch' normalization after each message-passing layer."""
    if name in (None, "none"):
        return nn.Identity()
    if name == "layer":
        return nn.LayerNorm(dim)
    if name == "batch":
        return nn.BatchNorm1d(dim)
    raise ValueError(f"norm must be None, 'layer' or 'batch', got {name!r}")


def message_passing_layer(conv: str, in_dim: int, out_dim: int, num_heads: int, attn_drop: float,
                          negative_slope: float, concat: bool = True) -> nn.Module:
    """One PyG layer: GATConv (heads concatenated to out_dim, or averaged) or GINConv with a
    2-layer MLP. GATConv adds a self-loop to every token, so a token whose neighbours are all
    hidden or absent still attends to itself."""
    from torch_geometric.nn import GATConv, GINConv

    if conv == "gat":
        if concat and out_dim % num_heads:
            raise ValueError(f"width {out_dim} is not divisible by num_heads={num_heads}")
        per_head = out_dim // num_heads if concat else out_dim
        return GATConv(in_dim, per_head, heads=num_heads, concat=concat, dropout=attn_drop,
                       negative_slope=negative_slope, add_self_loops=True)
    if conv == "gin":
        mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.PReLU(), nn.Linear(out_dim, out_dim))
        return GINConv(mlp, train_eps=True)
    raise ValueError(f"conv must be 'gat' or 'gin', got {conv!r}")


@gin.configurable
class GNNEncoder(Encoder):
    """Message passing over the token edges in Tokens.extras['edge_index'] (GraphMAE's encoder).

    Each of `depth` layers is: feature dropout (in_drop), a GAT or GIN layer (`conv`), an
    optional norm and residual, and an activation (also after the last layer, as GraphMAE's
    encoder does). Only edges between tokens present in `ids` (and valid) are used: in drop
    mode the hidden tokens and every edge touching them are absent, in replace mode all tokens
    take part. Width stays `dim` throughout (GAT: num_heads heads of dim / num_heads, concatenated).
    """

    uses_tokens = True

    def __init__(self, dim: int = 512, depth: int = 2, num_heads: int = 4, conv: str = "gat",
                 feat_drop: float = 0.2, attn_drop: float = 0.1, negative_slope: float = 0.2,
                 activation: str = "prelu", norm: Optional[str] = None, residual: bool = False):
        super().__init__()
        self.dim, self.residual = dim, residual
        self.feat_drop = nn.Dropout(feat_drop)
        self.convs = nn.ModuleList([message_passing_layer(conv, dim, dim, num_heads, attn_drop, negative_slope)
                                    for _ in range(depth)])
        self.norms = nn.ModuleList([make_norm(norm, dim) for _ in range(depth)])
        self.acts = nn.ModuleList([make_activation(activation) for _ in range(depth)])

    def forward(self, x, key_valid=None, tokens=None, ids=None, pos=None):  # [B, K, D] -> [B, K, D]
        key_valid, edges = slots_and_edges(x, key_valid, tokens, ids, "GNNEncoder")
        h = x[key_valid]  # [M, D]
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            out = norm(conv(self.feat_drop(h), edges))
            h = act(out + h if self.residual else out)
        return scatter_slots(h, key_valid)  # [B, K, D]


@gin.configurable
class GNNDecoder(Decoder):
    """GraphMAE's decoder: a bias-free linear from the encoder width (`embed`, GraphMAE's
    encoder_to_decoder), re-mask (hidden tokens' latents -> `mask_token`, zero at init as in
    GraphMAE), then `depth` message-passing layers whose last one maps to the target width.

    kind 'gat' / 'gin': message passing over Tokens.extras['edge_index'] restricted to the decoded
    tokens (the head *is* the last layer; GraphMAE uses one GAT layer with one head);
    'mlp': per-token Linear-PReLU-Dropout-Linear; 'linear': one Linear. Same interface as
    MAEDecoder: embed, mask_token, dim, spec (remask, use_pos), init_head(out_dim), forward.
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
        self.dim, self.depth, self.kind = dim, depth, kind
        self.spec = DecoderSpec(remask=remask, use_pos=use_pos)
        self.layer_args = dict(num_heads=num_heads, attn_drop=attn_drop, negative_slope=negative_slope)
        self.feat_drop, self.activation = nn.Dropout(feat_drop), activation
        self.body, self.acts, self.head = nn.ModuleList(), nn.ModuleList(), None

    def init_head(self, out_dim: int):
        """The model sets the output width once it knows the target's."""
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

    def forward(self, x, key_valid=None, tokens=None, ids=None, out_rows=None, pos=None):  # [B, M, dim] -> [B, M, out_dim]
        if self.kind in ("mlp", "linear"):
            return self.head(x)
        key_valid, edges = slots_and_edges(x, key_valid, tokens, ids, "GNNDecoder")
        h = x[key_valid]  # [M', dim]
        for conv, act in zip(self.body, self.acts):
            h = act(conv(self.feat_drop(h), edges))
        return scatter_slots(self.head(self.feat_drop(h), edges), key_valid)  # [B, M, out_dim]
