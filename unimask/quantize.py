"""Vector quantization with an EMA codebook (VQ-VAE, van den Oord et al. 2017; the EMA update of
their appendix, as sonnet's VectorQuantizerEMA): the codes BEiT-style targets predict.

z [..., D] -> nearest of K codes; the codebook follows an exponential moving average of the
vectors assigned to each code (decay 0.99, Laplace-smoothed counts), so it needs no gradient;
the encoder is pulled towards its codes by beta * ||z - sg(q)||^2 (beta 0.25) and gets the
decoder's gradient straight through. With `normalized` (BEiT v2's NormEMA quantizer) vectors
and codes live on the unit sphere, which keeps a small codebook from collapsing onto a few
codes while the encoder's scale still moves. Codes used less than `dead_below` of the average
code's use (on the EMA) are re-seeded from the batch's vectors, so the codebook stays alive; the codebook starts as a draw of the first
batch's vectors (BEiT v2 starts from k-means). Usage (perplexity, dead codes) is reported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int = 512, code_dim: int = 64, decay: float = 0.99, beta: float = 0.25,
                 eps: float = 1e-5, dead_below: float = 0.03, normalized: bool = True):
        super().__init__()
        self.num_codes, self.code_dim, self.decay, self.beta, self.eps = num_codes, code_dim, decay, beta, eps
        self.dead_below, self.normalized = dead_below, normalized
        self.register_buffer("codebook", torch.randn(num_codes, code_dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("code_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("dead_codes", torch.zeros(()))  # how many the last update found dead

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """z [M, D] -> the nearest code of each row [M] long (squared distance; ties: lowest index)."""
        distance = (z.float().square().sum(1, keepdim=True) - 2 * z.float() @ self.codebook.T
                    + self.codebook.square().sum(1)[None])
        return distance.argmin(1)

    def forward(self, z: torch.Tensor, valid: torch.Tensor) -> dict:
        """z [B, N, D], valid [B, N] -> {'quantized' [B, N, D] (straight-through), 'codes' [B, N],
        'commitment' [], 'perplexity' [], 'dead' []}; updates the codebook when training."""
        if self.normalized:  # BEiT v2's NormEMA: vectors and codes on the unit sphere (cosine nearest code)
            z = F.normalize(z, dim=-1)
        flat, real = z.reshape(-1, self.code_dim), valid.reshape(-1)
        codes = self.codes(flat.detach())
        if self.training:
            self.update(flat[real].detach().float(), codes[real])
        quantized = self.codebook[codes].to(z.dtype).view_as(z)
        diff = (z - quantized.detach()).square().mean(-1)  # [B, N]
        commitment = self.beta * (diff * valid).sum() / valid.sum().clamp(min=1)
        usage = torch.bincount(codes[real], minlength=self.num_codes).float()
        probs = usage / usage.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        return {"quantized": z + (quantized - z).detach(), "codes": codes.view(valid.shape), "commitment": commitment,
                "perplexity": perplexity, "dead": self.dead_codes.clone()}

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, codes: torch.Tensor):
        """The EMA step over the assigned vectors [M, D]; dead codes re-seeded from them."""
        if len(vectors) == 0:
            return
        if not bool(self.initialized):  # start from the data (BEiT v2 runs k-means; a random draw is its first step)
            picks = vectors[torch.randint(len(vectors), (self.num_codes,), device=vectors.device)]
            self.codebook.copy_(picks)
            self.code_sum.copy_(picks)
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
            codes = self.codes(vectors)
        onehot = F.one_hot(codes, self.num_codes).float()  # [M, K]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.T @ vectors, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        means = self.code_sum / smoothed[:, None]
        self.codebook.copy_(F.normalize(means, dim=-1) if self.normalized else means)
        dead = torch.nonzero(self.cluster_size < self.dead_below * total / self.num_codes).squeeze(1)
        self.dead_codes.fill_(len(dead))
        if len(dead):  # re-seed from this batch's vectors (deterministic under the step's torch seed)
            picks = vectors[torch.randint(len(vectors), (len(dead),), device=vectors.device)]
            self.codebook[dead], self.code_sum[dead], self.cluster_size[dead] = picks, picks, 1.0
