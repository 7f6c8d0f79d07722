"""Point-MAE's adapter: FPS centres + kNN groups as tokens, a mini-PointNet embedding, the
centre MLP position code and the Chamfer-L2 target."""
from __future__ import annotations

import os
from typing import Sequence

import gin
import torch
from torch import nn

from modalities.points.sampling import group_points
from unimask.interfaces import ModalityAdapter
from unimask.losses import ChamferLoss
from unimask.tokens import Tokens


class MiniPointNet(nn.Module):
    """Point-MAE's group Encoder: shared per-point MLP, max-pool, concat the pooled feature to
    every point, second MLP, max-pool. [R, K, 3] -> [R, dim]; order-invariant within a group."""

    def __init__(self, dim: int, point_dim: int = 3):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(point_dim, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                         nn.Conv1d(512, dim, 1))
        for module in self.modules():
            if isinstance(module, nn.Conv1d):  # Point-MAE's init
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:  # [R, K, 3] -> [R, dim]
        feature = self.first_conv(groups.transpose(1, 2))  # [R, 256, K]
        pooled = feature.max(2, keepdim=True).values  # [R, 256, 1]
        feature = torch.cat([pooled.expand_as(feature), feature], 1)  # [R, 512, K]
        return self.second_conv(feature).max(2).values  # [R, dim]


@gin.configurable
class PointAdapter(ModalityAdapter):
    """Point-MAE tokens: `num_groups` FPS centres x `group_size` kNN points each. Embeds the
    visible groups with a mini-PointNet; position = an MLP on the centre xyz, one MLP per
    width in `pos_dims` (encoder and decoder widths; `dim` is always included); target =
    the raw neighbourhood, scored with Chamfer-L2."""

    batch_key = "points"

    def __init__(self, num_groups: int = 64, group_size: int = 32, dim: int = 384,
                 pos_dims: Sequence[int] = (384, 384), pos_hidden: int = 128, fps_backend: str = "torch"):
        super().__init__()
        self.num_groups, self.group_size, self.fps_backend = num_groups, group_size, fps_backend
        self.target_dim = group_size * 3
        self.loss = ChamferLoss(point_dim=3)
        self.group_embed = MiniPointNet(dim)
        widths = dict.fromkeys(int(w) for w in (dim, *pos_dims))  # de-duplicated, in order
        self.centre_embed = nn.ModuleDict({str(w): nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(),
                                                                 nn.Linear(pos_hidden, w)) for w in widths})

    def tokenize(self, batch) -> Tokens:
        points = batch[self.batch_key] if isinstance(batch, dict) else batch  # [B, N, 3+]
        if points.dim() != 3 or points.shape[-1] < 3:
            raise ValueError(f"{self.batch_key} batch must be [B, N, 3+], got shape {tuple(points.shape)}")
        if points.shape[1] < max(self.num_groups, self.group_size):
            raise ValueError(f"clouds have {points.shape[1]} points, fewer than PointAdapter.num_groups="
                             f"{self.num_groups} / group_size={self.group_size}")
        neighbours, centres = group_points(points[..., :3].float(), self.num_groups, self.group_size, self.fps_backend)
        patches = neighbours.flatten(2)  # [B, G, K*3]
        return Tokens(patches, centres, patch_shape=(self.group_size, 3))

    def embed(self, patches, tokens, ids):  # [B, K_vis, K*3] -> [B, K_vis, D]
        batch, n_vis, _ = patches.shape
        groups = patches.reshape(batch * n_vis, self.group_size, 3)
        return self.group_embed(groups).view(batch, n_vis, -1)

    def pos(self, coords, dim):  # [..., 3] -> [..., dim]
        key = str(int(dim))
        if key not in self.centre_embed:
            raise ValueError(f"PointAdapter has no centre position MLP of width {dim} (built: "
                             f"{', '.join(self.centre_embed.keys())}); add it to PointAdapter.pos_dims")
        return self.centre_embed[key](coords)

    def render(self, tokens, pred, mask, path):
        """Sample 0 from two viewpoints: input groups | visible groups | visible + predicted
        hidden groups (each prediction shifted to its centre)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        centres = tokens.coords[0].detach().float().cpu()[:, None]  # [G, 1, 3]
        groups = tokens.patches[0].detach().float().cpu().view(tokens.num_tokens, -1, 3) + centres  # [G, K, 3]
        predicted = pred[0].detach().float().cpu().view(tokens.num_tokens, -1, 3) + centres
        hidden = mask.masked[0].cpu()
        panels = [("input", [(groups.reshape(-1, 3), "tab:blue")]),
                  ("visible", [(groups[~hidden].reshape(-1, 3), "tab:blue")]),
                  ("reconstruction", [(groups[~hidden].reshape(-1, 3), "tab:blue"),
                                      (predicted[hidden].reshape(-1, 3), "tab:red")])]
        fig = Figure(figsize=(9, 6))
        FigureCanvasAgg(fig)
        extent = float(groups.abs().max()) or 1.0
        for row, (elev, azim) in enumerate(((30, 45), (10, -120))):
            for col, (title, layers) in enumerate(panels):
                ax = fig.add_subplot(2, 3, row * 3 + col + 1, projection="3d")
                for xyz, colour in layers:
                    ax.scatter(xyz[:, 0], xyz[:, 2], xyz[:, 1], s=1, c=colour, depthshade=False)  # y up
                ax.view_init(elev=elev, azim=azim)
                for set_limits in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                    set_limits(-extent, extent)
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(title)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=80)
        return path
