"""Encoders over a set of tokens, called as f(x [B,K,D], key_valid [B,K], tokens, ids [B,K])."""
from __future__ import annotations

import contextlib
from typing import Optional

import gin
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

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
    """[B, K] bool -> [B, 1, 1, K] bool for SDPA, or None when nothing is padded (fast path)."""
    if key_valid is None or bool(key_valid.all()):
        return None
    return key_valid[:, None, None, :]


class RowBlock(Block):
    """timm's Block that can compute its output at some rows only: forward(x, attn_mask, out_rows)
    with rows [B, S] -> [B, S, D], equal to gather(block(x), rows). Keys and values still come
    from all K tokens; queries, projection and MLP run on the S rows (the last decoder block needs
    only the rows that are scored). It is the Block's own forward, so wrappers that hook a
    module's forward (FSDP's all-gather of the block's shards, torch.compile) see every call."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                out_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        if out_rows is None:
            return super().forward(x, attn_mask=attn_mask)
        if getattr(self.attn, "gate", None) is not None:  # a variant this shortcut does not cover
            return gather_tokens(super().forward(x, attn_mask=attn_mask), out_rows)
        attn = self.attn
        batch, k, _ = x.shape
        s, width, heads, head_dim = out_rows.shape[1], attn.attn_dim, attn.num_heads, attn.head_dim
        h = self.norm1(x)
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(gather_tokens(h, out_rows), weight[:width], None if bias is None else bias[:width])
        kv = F.linear(h, weight[width:], None if bias is None else bias[width:])
        q = q.view(batch, s, heads, head_dim).transpose(1, 2)  # [B, H, S, hd]
        key, value = kv.view(batch, k, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, K, hd] each
        q, key = attn.q_norm(q), attn.k_norm(key)
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask,
                                             dropout_p=attn.attn_drop.p if self.training else 0.0)
        out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, s, width))))
        x = gather_tokens(x, out_rows) + self.drop_path1(self.ls1(out))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class TransformerStack(nn.Module):
    """timm Blocks + final norm: the body shared by the ViT encoder and the MAE decoder."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True, pos_every_block: bool = False):
        super().__init__()
        self.pos_every_block = pos_every_block  # the model then passes `pos` to forward
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList([
            RowBlock(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, norm_layer=nn.LayerNorm)
            for rate in rates
        ])
        self.norm = nn.LayerNorm(dim) if depth else nn.Identity()
        self.dim = dim

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None,
                out_rows: Optional[torch.Tensor] = None, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x [B, K, D] -> [B, K, D], or [B, S, D] at out_rows [B, S] (the last block computes only those).

        pos [B, K, D]: position codes added again before every block after the first (x comes
        with them added once), as Point-MAE and Point-BERT do, so deep layers keep seeing where
        each token is: with irregular coordinates there is no grid order to fall back on."""
        attn_mask = key_padding_mask(key_valid)  # [B, 1, 1, K] | None
        with attention_backend(x):
            for i, block in enumerate(self.blocks):
                last = i == len(self.blocks) - 1
                if pos is not None and i > 0:
                    x = x + pos
                x = block(x, attn_mask=attn_mask, out_rows=out_rows if last else None)
        if out_rows is not None and not self.blocks:
            x = gather_tokens(x, out_rows)
        return self.norm(x)


def pos_kwargs(stack: nn.Module, pos: torch.Tensor) -> dict:
    """{'pos': pos} for a stack that adds position codes before every block, else {}."""
    return {"pos": pos} if getattr(stack, "pos_every_block", False) else {}


def encode_with_pos(adapter, encoder: nn.Module, x: torch.Tensor, valid, tokens, ids: torch.Tensor) -> torch.Tensor:
    """Embedded tokens x [B, K, D] of the tokens ids [B, K], position codes not yet added ->
    encoder(x + codes) [B, K, D]; an encoder with `pos_every_block` gets the codes again."""
    pos = adapter.pos(gather_tokens(tokens.coords, ids), x.shape[-1]).to(x.dtype)
    return encoder(x + pos, valid, tokens, ids, **pos_kwargs(encoder, pos))


@gin.configurable
class ViTEncoder(TransformerStack):
    """ViT on the visible tokens only (MAE): position codes are added by the model before."""

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True, pos_every_block: bool = False):
        super().__init__(dim, depth, num_heads, mlp_ratio, drop_path, qkv_bias, pos_every_block)

    def forward(self, x, key_valid=None, tokens=None, ids=None, pos=None):  # [B, K, D] -> [B, K, D]
        return super().forward(x, key_valid, pos=pos)


# ---- message passing over token edges --------------------------------------------------------
def edges_among(edge_index: torch.Tensor, ids: torch.Tensor, key_valid: Optional[torch.Tensor],
                num_tokens: int) -> torch.Tensor:
    """Keep the edges whose two ends are both among the valid slots of ids, renumbered.

    edge_index [2, E] indexes the flattened B*N tokens (Tokens.extras['edge_index']); ids [B, K]
    says which token each slot of x [B, K, D] holds. Returns [2, E'] into the flattened valid
    slots, x[key_valid] ([M, D]), so an edge to a hidden or padding token is simply gone.
    """
    from torch_geometric.utils import subgraph

    batch, k = ids.shape
    key_valid = torch.ones_like(ids, dtype=torch.bool) if key_valid is None else key_valid
    offsets = torch.arange(batch, device=ids.device)[:, None] * num_tokens
    token_of_slot = (ids + offsets)[key_valid]  # [M] flattened token index of each valid slot
    edges, _ = subgraph(token_of_slot, edge_index.to(ids.device), relabel_nodes=True,
                        num_nodes=batch * num_tokens)
    return edges  # [2, E']


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
class GNNEncoder(nn.Module):
    """Message passing over the token edges in Tokens.extras['edge_index'] (GraphMAE's encoder).

    Each of `depth` layers is: feature dropout (in_drop), a GAT or GIN layer (`conv`), an
    optional norm and residual, and an activation (also after the last layer, as GraphMAE's
    encoder does). Only edges between tokens present in `ids` (and valid) are used: in drop
    mode the hidden tokens and every edge touching them are absent, in replace mode all tokens
    take part. Width stays `dim` throughout (GAT: num_heads heads of dim / num_heads, concatenated).
    """

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

    def forward(self, x, key_valid=None, tokens=None, ids=None):  # [B, K, D] -> [B, K, D]
        if tokens is None or "edge_index" not in tokens.extras:
            raise ValueError("GNNEncoder needs Tokens.extras['edge_index'] (edges into the flattened B*N tokens)")
        key_valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if key_valid is None else key_valid
        ids = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1) if ids is None else ids
        edges = edges_among(tokens.extras["edge_index"], ids, key_valid, tokens.num_tokens)
        h = x[key_valid]  # [M, D]
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            out = norm(conv(self.feat_drop(h), edges))
            h = act(out + h if self.residual else out)
        return scatter_slots(h, key_valid)  # [B, K, D]
