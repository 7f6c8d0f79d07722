"""Latent targets beyond the teacher's own features (issue 47): DMT-JEPA's neighbour aggregates,
CAPI's Sinkhorn-balanced prototype assignments, their logged collapse measures, the JEPA pieces
switched onto the audio and point recipes by gin, smooth L1, and `tools/bench.py jepa`."""
import math
import os
import re
import subprocess
import sys

import gin
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, SMOKE, cli, read_metrics, run_train, tiny_image_model
from modalities.image import ImageAdapter
from unimask.encoders import ViTEncoder
from unimask.evaluation.protocols import one_thread
from unimask.interfaces import Target
from unimask.losses import CELoss, SmoothL1Loss
from unimask.masking import MultiBlockMasker
from unimask.models.jepa import JEPAModel
from unimask.predictors import JEPAPredictor
from unimask.targets import (AssignmentCELoss, ClusterTarget, DiscriminativeTarget, EMATeacherTarget,
                             neighbour_aggregate, sinkhorn)

FAST = ["train.num_workers=0", "train.precision='fp32'", "train.progress_bar=False"]


def train_in_process(recipe, workdir, steps):
    """tools/train.py on `recipe` under smoke, in this process, on one thread (on 2 shared cores a
    second thread mostly waits) -> its metrics rows."""
    with one_thread():
        args = ["--gin", f"gin/{recipe}", "--gin", SMOKE, "--workdir", workdir]
        assert run_train(sum((["--gin_param", p] for p in FAST + [f"train.steps={steps}"]), args)) == 0
    return read_metrics(workdir)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_jepa(target, loss=None, dim=32):
    return JEPAModel(ImageAdapter(img_size=28, patch_size=4, in_chans=1, dim=dim), MultiBlockMasker(),
                     ViTEncoder(dim=dim, depth=2, num_heads=2), JEPAPredictor(in_dim=dim, dim=16, depth=1, num_heads=2),
                     target, loss=loss)


def teacher(dim=32):
    return EMATeacherTarget(latent_dim=dim, normalize=True)


def images(batch=4, seed=0):
    return {"image": torch.randn(batch, 1, 28, 28, generator=gen(seed))}


# ---- DMT-JEPA ------------------------------------------------------------------------------------
def test_neighbour_aggregate_matches_a_hand_computed_example():
    """Four tokens on a line (x = 0, 1, 2, 3). Token 0's cosines: token 1 0.995, token 2 0, token 3
    0.994 (itself left out). Whole map, top 2: tokens 1 and 3; within its 2 nearest (1, 2): both."""
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.9, 0.1]]])
    coords = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    ids = torch.tensor([[0, 2]])
    out = neighbour_aggregate(f, coords, valid, ids, top_k=2)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.95, 0.1]))  # mean of f1, f3
    torch.testing.assert_close(out[0, 1], torch.tensor([0.95, 0.1]))  # token 2: f3 (0.110), f1 (0.0995); f0 is 0
    near = neighbour_aggregate(f, coords, valid, ids, top_k=2, candidates=2)
    torch.testing.assert_close(near[0, 0], torch.tensor([0.5, 0.55]))  # f1 and f2: the 2 nearest are all there is
    torch.testing.assert_close(near[0, 1], torch.tensor([0.95, 0.1]))  # token 2's nearest: 1 and 3
    soft = neighbour_aggregate(f, coords, valid, ids[:, :1], top_k=2, temperature=0.1)
    c1, c3 = 1 / math.sqrt(1.01), 0.9 / math.sqrt(0.82)
    w1 = 1 / (1 + math.exp((c3 - c1) / 0.1))
    torch.testing.assert_close(soft[0, 0], w1 * f[0, 1] + (1 - w1) * f[0, 3])
    padded = valid.clone()
    padded[0, 3] = False  # padding is never a neighbour
    torch.testing.assert_close(neighbour_aggregate(f, coords, padded, ids[:, :1], top_k=2)[0, 0],
                               torch.tensor([0.5, 0.55]))
    alone = neighbour_aggregate(f[:, :1], coords[:, :1], valid[:, :1], ids[:, :1], top_k=2)
    torch.testing.assert_close(alone, f[:, :1])  # no candidate at all: its own feature


def test_discriminative_target_in_jepa_and_mae_models():
    model = tiny_jepa(DiscriminativeTarget(teacher(), top_k=4, candidates=8), loss=SmoothL1Loss())
    out = model(images(), generator=gen())
    assert out.pred.shape[-1] == 32 and torch.isfinite(out.loss) and float(out.stats["target_std"]) > 0.1
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("target."))
    mae = tiny_image_model(target=DiscriminativeTarget(EMATeacherTarget(latent_dim=32)), loss=SmoothL1Loss())
    assert torch.isfinite(mae({"image": torch.randn(4, 3, 16, 16)}, generator=gen()).loss)
    with pytest.raises(NotImplementedError):
        mae.target.invert(None, None, None)


def test_probes_read_the_teacher_inside_a_wrapping_target():
    """probe_target_encoder works through DMT / cluster targets: they hand on their teacher's parts."""
    for target in (DiscriminativeTarget(teacher()), ClusterTarget(teacher(), num_prototypes=8)):
        model = tiny_jepa(target)
        model.probe_target_encoder = True
        with torch.no_grad():
            model.target.teacher_parts()[1].blocks[0].attn.qkv.weight.add_(1.0)  # teacher != online encoder
        teacher_rows, valid = model.features(images())
        model.probe_target_encoder = False
        online_rows, _ = model.features(images())
        assert teacher_rows.shape == online_rows.shape == (4, 49, 32) and bool(valid.all())
        assert not torch.allclose(teacher_rows, online_rows)


# ---- clusters (CAPI) -------------------------------------------------------------------------------
def test_sinkhorn_rows_sum_to_one_and_the_prototypes_share_the_mass():
    scores = torch.randn(1, 240, 12, generator=gen()) * 3 + torch.linspace(0, 6, 12)  # favours the last prototypes
    valid = torch.ones(1, 240, dtype=torch.bool)
    valid[0, 200:] = False
    few, many = sinkhorn(scores, valid, iters=3), sinkhorn(scores, valid, iters=50)
    for q in (few, many):
        torch.testing.assert_close(q[0, :200].sum(-1), torch.ones(200))
        assert float(q[0, 200:].abs().sum()) == 0.0
    torch.testing.assert_close(many[0].sum(0), torch.full((12,), 200 / 12), rtol=1e-3, atol=1e-3)
    raw = torch.softmax(scores[0, :200], -1).sum(0)  # from ~2 to ~50 tokens' mass per prototype
    assert float(few[0].sum(0).std()) < 0.25 * float(raw.std())  # 3 iterations already even out the usage
    assert float(few[0].sum(0).min()) > 0.5 * 200 / 12 > 2 * float(raw.min())


def test_cluster_target_gradient_stats_and_prototype_step():
    target = ClusterTarget(teacher(), num_prototypes=16, lr=1e-2)
    model = tiny_jepa(target, loss=AssignmentCELoss())
    out = model(images(), generator=gen())
    assert out.pred.shape[-1] == 16 and torch.isfinite(out.loss)
    assert set(out.stats) >= {"target_std", "cluster_entropy", "prototype_loss"}
    assert 0.5 * math.log(16) < float(out.stats["cluster_entropy"]) <= math.log(16) + 1e-5
    # the closed-form gradient of the prototypes' own loss is autograd's
    tokens = model.adapter.tokenize(images())
    features, _ = target.teacher(tokens, model.adapter)
    x = F.normalize(features.float(), dim=-1).flatten(0, 1)
    w, b = target.prototypes.clone().requires_grad_(), target.bias.clone().requires_grad_()
    target.prototypes_grad.zero_(), target.bias_grad.zero_()
    target._pending = 0
    q, _ = target(tokens, model.adapter)
    loss = -(q.flatten(0, 1) * F.log_softmax((x @ w.T + b) / target.pred_temp, -1)).sum(-1).mean()
    gw, gb = torch.autograd.grad(loss, (w, b))
    torch.testing.assert_close(target.prototypes_grad, gw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(target.bias_grad, gb, rtol=1e-4, atol=1e-6)
    before = target.prototypes.clone()
    model.after_step(0.5)  # lr 1e-2 * half cosine at 0.5 = 5e-3: Adam's first step moves each entry ~ lr
    step = (target.prototypes - before).abs()
    assert 1e-3 < float(step.max()) < 1e-2 and int(target.adam_steps) == 1 and target._pending == 0
    assert "target.prototypes" in model.state_dict() and "target.prototypes_grad" not in model.state_dict()
    in_optimizer = {id(p) for g in model.param_groups(0.05) for p in g["params"]}
    assert not in_optimizer & {id(p) for p in target.parameters()}
    model.eval()
    model(images(), generator=gen())
    assert target._pending == 0  # evaluation leaves the prototypes alone


def test_hard_assignments_and_the_mae_decoder():
    hard = tiny_jepa(ClusterTarget(teacher(), num_prototypes=8, hard=True), loss=CELoss())
    out = hard(images(), generator=gen())
    assert torch.isfinite(out.loss) and out.pred.shape[-1] == 8
    positions = ClusterTarget(teacher(), num_prototypes=8, sinkhorn_iters=100, balance="positions").eval()
    positions.attach(hard)
    q, _ = positions(hard.adapter.tokenize(images(batch=16)), hard.adapter)  # [16, 49, 8]
    torch.testing.assert_close(q.sum(-1), torch.ones(16, 49))
    torch.testing.assert_close(q.sum(0), torch.full((49, 8), 2.0), atol=0.05, rtol=0)  # per position (CAPI)
    mae = tiny_image_model(target=ClusterTarget(EMATeacherTarget(latent_dim=32), num_prototypes=8),
                           loss=AssignmentCELoss())
    out = mae({"image": torch.randn(4, 3, 16, 16)}, generator=gen())
    assert torch.isfinite(out.loss) and {"cluster_entropy", "target_std"} <= set(out.stats)
    assert tiny_image_model()({"image": torch.randn(2, 3, 16, 16)}).stats == {}  # Target.log_stats: none
    assert Target().log_stats() == {}


def test_capi_cpu_smoke_run_keeps_its_prototypes_in_use(tmp_path):
    workdir = str(tmp_path / "capi")
    code, output, _ = cli(["tools/train.py", "--gin", "gin/capi_cpu.gin", "--gin", SMOKE, "--workdir", workdir],
                          FAST + ["train.steps=15"], timeout=240)
    assert code == 0, output[-3000:]
    rows = read_metrics(workdir)
    assert len(rows) == 15 and all(math.isfinite(r["loss"]) for r in rows)
    entropy, std = [r["cluster_entropy"] for r in rows], [r["target_std"] for r in rows]
    assert min(entropy) > 0.5 * math.log(256), entropy  # 64 tokens a batch: at most log 64 = 0.75 log 256
    assert min(std) > 0.2, std


# ---- recipes ---------------------------------------------------------------------------------------
def test_dmt_jepa_cpu_trains_with_falling_loss(tmp_path):
    rows = train_in_process("dmt_jepa_cpu.gin", str(tmp_path / "dmt"), steps=20)
    losses = [r["loss"] for r in rows]
    assert len(rows) == 20 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert min(r["target_std"] for r in rows) > 0.2


@pytest.mark.parametrize("recipe", ["audio_jepa_cpu.gin", "point_jepa_cpu.gin"])
def test_jepa_switched_onto_audio_and_points_by_gin(recipe, tmp_path):
    from unimask.cli import parse_gin

    parse_gin([os.path.join("gin", recipe), SMOKE], FAST)
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    assert isinstance(model, JEPAModel) and isinstance(model.masker, MultiBlockMasker)
    gin.clear_config()
    rows = train_in_process(recipe, str(tmp_path / "run"), steps=4)
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) and r["target_std"] > 0.1 for r in rows), rows


def test_smooth_l1_is_per_token():
    pred, target = torch.randn(2, 3, 5, generator=gen()) * 2, torch.randn(2, 3, 5, generator=gen(1))
    per_token = SmoothL1Loss(beta=0.5)(pred, target)
    assert per_token.shape == (2, 3)
    torch.testing.assert_close(per_token.mean(), F.smooth_l1_loss(pred, target, beta=0.5))
    weight = torch.ones(2, 3, 5)
    weight[..., 3:] = 0
    torch.testing.assert_close(SmoothL1Loss(beta=0.5)(pred, target, weight),
                               F.smooth_l1_loss(pred[..., :3], target[..., :3], beta=0.5, reduction="none").mean(-1))


@pytest.mark.slow  # ~7 s
def test_jepa_bench_prints_its_ratio():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "jepa", "--smoke", "--steps", "1",
                           "--warmup", "0", "--threads", "1"], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio_jepa_vs_mae=\d+\.\d\d", lines[-1]), lines[-3:]
    assert sum("step median" in line for line in lines) == 2
