"""Cluster targets: the student predicts which online prototype each hidden token's teacher feature
is assigned to (CAPI, Darcet et al., 2025; SIGMA, Salehi et al., ECCV 2024).

    teacher(Tokens, every token visible) --> features [B, N, D] --> L2-normalized x
    logits = x @ prototypes^T + bias                                   [B, N, K]
    assignments = Sinkhorn-Knopp(logits / target_temp)  (balanced over the tokens, rows sum to 1)
    student: logits over the K prototypes at the hidden tokens --AssignmentCELoss--> CE(assignment)

The prototypes learn by their own loss, as CAPI's clustering head: CE between the assignments and
softmax(logits / pred_temp), on every real token of the batch, the teacher's features held fixed.
That gradient has a closed form ((softmax - assignment) / pred_temp per token), so it is computed
in the forward without autograd, summed over the micro-batches and applied in after_step by the
target's own AdamW (CAPI: a second optimizer, lr 5e-4, betas (0.9, 0.95), warmup then cosine).
Prototypes, bias and the AdamW moments are buffers: checkpointed with the model, out of the main
optimizer (which skips `target.` anyway), and the same on every process (their gradient and the
Sinkhorn sums are all-reduced when training under torch.distributed). The teacher is an EMA of
the student (EMATeacherTarget), as in CAPI.

Collapse is visible in log_stats(): `cluster_entropy`, the entropy (nats) of the mean hard
assignment over the batch's real tokens, i.e. how evenly the prototypes are used (log K at best;
the soft assignments' mean is near uniform by construction, so it would not show a collapse),
and `target_std`, the teacher features' std over the tokens (0 when they collapse to one vector).
The student's loss may rise while the assignments sharpen: judge a run by a finite loss and a
usage entropy that stays up.
"""
from __future__ import annotations

import math

import gin
import torch
import torch.nn.functional as F

from unimask.interfaces import Target
from unimask.targets.teachers import TeacherFeatures
from unimask.tokens import gather_tokens

BALANCES = ("tokens", "positions")
EXP_HEADROOM = 50.0  # exp(score - column max + 50): fp32 room both ways (CAPI's stable_exp)


def distributed() -> bool:
    """Whether sums must span every process (a torch.distributed training run)."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, valid=None, iters: int = 3, reduce: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Sinkhorn-Knopp over scores [..., T, K] (logits / temperature) -> assignments [..., T, K]: each
    iteration divides every prototype's column by its sum over the T rows (the prototypes get equal
    mass), then every row by its sum (each row a distribution), so the rows sum to 1 and the
    column sums approach T / K. Rows with valid [..., T] False are 0 and count for nothing.
    reduce: the column sums (and maxima) are all-reduced over the processes (CAPI's reduced_sum)."""
    s = scores.float()
    if valid is not None:
        s = s.masked_fill(~valid[..., None], float("-inf"))
    shift = s.amax(-2, keepdim=True).clamp(min=-1e30)  # per column: cancelled by the column division
    if reduce:
        torch.distributed.all_reduce(shift, torch.distributed.ReduceOp.MAX)
    m = torch.exp(s - shift + EXP_HEADROOM)
    for _ in range(iters):
        col = m.sum(-2, keepdim=True)
        if reduce:
            torch.distributed.all_reduce(col)
        m = m / (col + eps)
        m = m / (m.sum(-1, keepdim=True) + eps)
    return m


def usage_entropy(assignments: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the mean hard assignment: argmax of assignments [B, N, K] over the real
    tokens valid [B, N] -> [] (log K when every prototype is used equally, 0 when one takes all)."""
    k = assignments.shape[-1]
    counts = assignments.new_zeros(k).scatter_add_(0, assignments.argmax(-1).flatten(), valid.flatten().float())
    p = counts / counts.sum().clamp(min=1)
    return -torch.xlogy(p, p).sum()


@gin.configurable
class AssignmentCELoss:
    """Cross-entropy per token between the student's logits over the prototypes pred [B, M, K],
    divided by `temperature` (CAPI's student_temp 0.12), and the target's assignment: soft
    [B, M, K] (rows summing to 1) or hard ids [B, M, 1] -> [B, M]."""

    def __init__(self, temperature: float = 0.12):
        self.temperature = temperature

    def __call__(self, pred, target, weight=None):
        log_p = F.log_softmax(pred.float() / self.temperature, -1)
        if not target.is_floating_point():
            return -log_p.gather(-1, target.long()).squeeze(-1)
        return -(target.float() * log_p).sum(-1)


@gin.configurable
class ClusterTarget(Target):
    """teacher: the teacher target (EMATeacherTarget, as CAPI; its gin bindings stay its own);
    num_prototypes K (CAPI: 16384), the width of the student's head; sinkhorn_iters (3);
    target_temp: the Sinkhorn input's temperature (0.06); pred_temp: the prototypes' own loss's
    (0.12); lr, betas, weight_decay, warmup: the prototypes' AdamW (CAPI: 5e-4, (0.9, 0.95), torch's
    0.01), lr warmed up over the first `warmup` share of the run, then a half cosine to 0;
    balance: 'tokens' (every real token of the batch, across processes: small batches) or
    'positions' (CAPI: each token position across the batch's samples; a fixed token count);
    hard: the target is the argmax assignment as an id [.., 1] (AssignmentCELoss and CELoss take
    it) instead of the soft assignment [.., K]."""

    def __init__(self, teacher: TeacherFeatures = gin.REQUIRED, num_prototypes: int = 16384, sinkhorn_iters: int = 3,
                 target_temp: float = 0.06, pred_temp: float = 0.12, lr: float = 5e-4, betas=(0.9, 0.95),
                 weight_decay: float = 0.01, warmup: float = 0.1, balance: str = "tokens", hard: bool = False):
        super().__init__()
        if balance not in BALANCES:
            raise ValueError(f"ClusterTarget.balance={balance!r}: use one of {BALANCES}")
        if num_prototypes < 2 or sinkhorn_iters < 1 or min(target_temp, pred_temp) <= 0:
            raise ValueError(f"ClusterTarget: num_prototypes={num_prototypes} (>= 2), sinkhorn_iters={sinkhorn_iters} "
                             f"(>= 1), target_temp={target_temp} and pred_temp={pred_temp} (> 0)")
        self.teacher, self.num_prototypes, self.sinkhorn_iters = teacher, num_prototypes, sinkhorn_iters
        self.target_temp, self.pred_temp, self.balance, self.hard = target_temp, pred_temp, balance, hard
        self.lr, self.betas, self.weight_decay, self.warmup = lr, tuple(betas), weight_decay, warmup
        if teacher.with_input:
            raise ValueError("ClusterTarget clusters teacher latents: its teacher needs with_input=False")
        # CAPI's clustering head: a linear of normal(std=1) weights and zero bias on L2-normalized features
        for name, value in (("prototypes", torch.randn(num_prototypes, teacher.latent_dim)),
                            ("bias", torch.zeros(num_prototypes))):
            self.register_buffer(name, value)
            self.register_buffer(f"{name}_avg", torch.zeros_like(value))  # AdamW moments: saved with the model
            self.register_buffer(f"{name}_sq", torch.zeros_like(value))
            self.register_buffer(f"{name}_grad", torch.zeros_like(value), persistent=False)  # summed micro-batches
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self._pending = 0  # micro-batches whose gradient waits for after_step
        self._stats = {}

    def dim(self, adapter) -> int:
        return self.num_prototypes

    def attach(self, model):
        self.teacher.attach(model)

    @torch.no_grad()
    def forward(self, tokens, adapter):
        """-> (assignments [B, N, K] float, or ids [B, N, 1] long with hard, None); in training also
        the prototypes' gradient and the logged stats."""
        features, _ = self.teacher(tokens, adapter)  # [B, N, D]
        with torch.autocast(features.device.type, enabled=False):  # logits / 0.06 want fp32 matmuls
            return self.assign(features.float(), tokens.valid_mask())

    def assign(self, features: torch.Tensor, valid: torch.Tensor) -> tuple:
        """features [B, N, D] fp32, valid [B, N] -> forward's result."""
        x = F.normalize(features, dim=-1)
        logits = x @ self.prototypes.T + self.bias  # [B, N, K]
        reduce = self.training and distributed()
        scores = logits / self.target_temp
        if self.balance == "positions":  # [N, B, K]: each position balanced over the samples
            q = sinkhorn(scores.transpose(0, 1), valid.T, self.sinkhorn_iters, reduce).transpose(0, 1)
        else:  # [1, B * N, K]: every token of the batch
            q = sinkhorn(scores.flatten(0, 1)[None], valid.flatten()[None], self.sinkhorn_iters, reduce).view_as(logits)
        log_p = F.log_softmax(logits / self.pred_temp, -1)
        real = valid[..., None].float()
        count = real.sum().clamp(min=1)
        fit = -(q * log_p * real).sum() / count  # the prototypes' own loss (CAPI's clustering loss)
        if self.training:  # d fit / d logits = (softmax - q) / pred_temp per real token
            grad = (log_p.exp() - q) * real / (self.pred_temp * count)  # [B, N, K]
            self.prototypes_grad.add_(grad.flatten(0, 1).T @ x.flatten(0, 1))
            self.bias_grad.add_(grad.sum((0, 1)))
            self._pending += 1
        from unimask.models.jepa import feature_std  # the models import the targets: imported when used

        self._stats = {"cluster_entropy": usage_entropy(q, valid), "target_std": feature_std(features, valid),
                       "prototype_loss": fit}
        return (q.argmax(-1, keepdim=True) if self.hard else q), None

    def select(self, tokens, adapter, ids):
        """Sinkhorn balances over every token of the batch, so all are assigned, then ids [B, S] kept."""
        values, _ = self(tokens, adapter)
        return gather_tokens(values, ids), None

    def log_stats(self) -> dict:
        return dict(self._stats)

    def lr_at(self, progress: float) -> float:
        """The prototypes' lr: linear warmup over the first `warmup` share, then a half cosine to 0."""
        ramp = min(1.0, progress / self.warmup) if self.warmup > 0 else 1.0
        return self.lr * ramp * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    @torch.no_grad()
    def teacher_parts(self):
        return self.teacher.teacher_parts()

    def after_step(self, progress: float):
        """The teacher's EMA step, then one AdamW step of the prototypes on the summed micro-batch
        gradients (averaged over the processes)."""
        self.teacher.after_step(progress)
        if not self._pending:
            return
        grads = [self.prototypes_grad / self._pending, self.bias_grad / self._pending]
        if distributed():
            for g in grads:
                torch.distributed.all_reduce(g)
                g /= torch.distributed.get_world_size()
        lr, (beta1, beta2) = self.lr_at(progress), self.betas
        steps = self.adam_steps.add_(1).float()
        c1, c2 = 1 - beta1 ** steps, 1 - beta2 ** steps  # bias corrections, tensors: no host sync
        for param, avg, sq, g in ((self.prototypes, self.prototypes_avg, self.prototypes_sq, grads[0]),
                                  (self.bias, self.bias_avg, self.bias_sq, grads[1])):
            param.mul_(1 - lr * self.weight_decay)
            avg.mul_(beta1).add_(g, alpha=1 - beta1)
            sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            param.sub_(lr * (avg / c1) / ((sq / c2).sqrt() + 1e-8))
        self.prototypes_grad.zero_()
        self.bias_grad.zero_()
        self._pending = 0

    def invert(self, pred, tokens, adapter):
        raise NotImplementedError("ClusterTarget predicts prototype assignments: there is nothing to draw")
