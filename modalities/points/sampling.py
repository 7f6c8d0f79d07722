"""Farthest point sampling, k nearest neighbours and Point-MAE's grouping: batched, pure torch,
the same code on CPU and GPU (no compiled CUDA extension). The optional `fpsample` package
gives a faster CPU FPS (backend='fpsample')."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from unimask.tokens import gather_tokens


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, n_samples: int, random_start: bool = False,
                          generator: Optional[torch.Generator] = None, backend: str = "torch") -> torch.Tensor:
    """xyz [B, N, C] -> [B, n_samples] long indices of distinct points, each the farthest
    from those already picked. Starts at point 0 (as pointnet2's CUDA op) or at a random
    point drawn from `generator`. Chosen points are never picked again, so indices stay
    distinct even when the cloud holds duplicates (clouds padded by resampling)."""
    batch, n, _ = xyz.shape
    if not 0 < n_samples <= n:
        raise ValueError(f"farthest_point_sample: cannot pick {n_samples} of {n} points")
    if backend == "fpsample":
        return fps_with_fpsample(xyz, n_samples)
    if backend != "torch":
        raise ValueError(f"farthest_point_sample backend must be 'torch' or 'fpsample', got {backend!r}")
    xyz = xyz if xyz.is_floating_point() else xyz.float()
    rows = torch.arange(batch, device=xyz.device)
    if random_start:
        gen_device = generator.device if generator is not None else xyz.device
        farthest = torch.randint(n, (batch,), generator=generator, device=gen_device).to(xyz.device)
    else:
        farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    picked = torch.empty(batch, n_samples, dtype=torch.long, device=xyz.device)
    min_dist = torch.full((batch, n), float("inf"), dtype=xyz.dtype, device=xyz.device)  # to the picked set
    for i in range(n_samples):
        picked[:, i] = farthest
        centre = xyz[rows, farthest]  # [B, C]
        min_dist = torch.minimum(min_dist, ((xyz - centre[:, None]) ** 2).sum(-1))
        min_dist[rows, farthest] = -1.0  # picked: below any distance, never the argmax again
        farthest = min_dist.argmax(1)
    return picked


def fps_with_fpsample(xyz: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The optional `fpsample` package (CPU, per sample, start index 0): [B, N, C] -> [B, G]."""
    try:
        import fpsample
    except ImportError as err:
        raise ImportError("farthest_point_sample(backend='fpsample') needs `pip install fpsample`") from err
    clouds = xyz.detach().float().cpu().numpy()
    picked = [np.asarray(fpsample.fps_sampling(cloud, n_samples, start_idx=0), dtype=np.int64) for cloud in clouds]
    return torch.from_numpy(np.stack(picked)).to(xyz.device)


@torch.no_grad()
def knn_indices(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """points [B, N, C], queries [B, G, C] -> [B, G, k] long: the k nearest points of each
    query, nearest first (torch.cdist + topk). Distances are taken directly, not through
    |a|^2 + |b|^2 - 2ab, whose rounding (~2e-3 on unit clouds) reorders close neighbours;
    so a query that is a point always finds itself first."""
    if k > points.shape[1]:
        raise ValueError(f"knn_indices: cannot take {k} neighbours from {points.shape[1]} points")
    dist = torch.cdist(queries.float(), points.float(), compute_mode="donot_use_mm_for_euclid_dist")  # [B, G, N]
    return dist.topk(k, dim=-1, largest=False, sorted=True).indices


def group_points(xyz: torch.Tensor, num_groups: int, group_size: int, backend: str = "torch"):
    """Point-MAE's Group: xyz [B, N, 3] -> neighbourhoods [B, G, K, 3] relative to their
    centres, centres [B, G, 3]."""
    batch = xyz.shape[0]
    centres = gather_tokens(xyz, farthest_point_sample(xyz, num_groups, backend=backend))  # [B, G, 3]
    neighbour_ids = knn_indices(xyz, centres, group_size)  # [B, G, K]
    neighbours = gather_tokens(xyz, neighbour_ids.flatten(1)).view(batch, num_groups, group_size, xyz.shape[-1])
    return neighbours - centres[:, :, None], centres
