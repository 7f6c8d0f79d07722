"""Latent prediction (I-JEPA, V-JEPA): MultiBlockMasker's counting rule and layouts, JEPAModel's
step, its EMA teacher, and the recipes under smoke."""
import math
import os

import gin
import pytest
import torch

from helpers import SMOKE, WORKERS, cli, read_metrics
from modalities.image import ImageAdapter
from unimask.encoders import ViTEncoder
from unimask.losses import L1Loss
from unimask.masking import ConstantRatio, LinearRatio, MultiBlockMasker, RandomMasker, UniformRatio
from unimask.models.jepa import JEPAModel
from unimask.predictors import JEPAPredictor
from unimask.targets import EMATeacherTarget, PixelTarget
from unimask.tokens import Tokens

RECIPES = ["ijepa.gin", "ijepa_cpu.gin", "vjepa.gin", "vjepa_cpu.gin"]


def grid_tokens(grid, batch=8, valid=None):
    axes = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    coords = torch.stack(axes, -1).reshape(1, -1, len(grid)).expand(batch, -1, -1).float()
    return Tokens(torch.zeros(batch, coords.shape[1], 3), coords, valid=valid, grid=tuple(grid))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- MultiBlockMasker --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [(0.15, 0.15), (0.2, 0.2), (0.15, 0.2)])
def test_target_blocks_hold_exactly_round_scale_n_places_in_a_filled_box(scale):
    """14 x 14: a block is round(s * 196) places; its box is w columns and ceil(c / w) rows, every
    row full but the last, which is filled from the left; the box's aspect follows the drawn one."""
    mask = MultiBlockMasker(target_scale=scale)(grid_tokens((14, 14), batch=32), 0.0, gen())
    blocks = mask.target_blocks  # [B, 4, 196]
    assert blocks.shape == (32, 4, 196)
    counts = blocks.sum(-1)
    low, high = (math.floor(s * 196 + 0.5) for s in scale)
    assert bool(((counts >= low) & (counts <= high)).all()), counts
    if scale[0] == scale[1]:
        assert bool((counts == low).all())
    aspects = []
    for block in blocks.reshape(-1, 14, 14):
        rows, cols = block.any(1).nonzero().squeeze(1), block.any(0).nonzero().squeeze(1)
        high_, wide = len(rows), len(cols)
        assert rows.tolist() == list(range(rows[0], rows[0] + high_)) and cols.tolist() == list(range(cols[0], cols[0] + wide))
        box = block[rows[0]:rows[0] + high_, cols[0]:cols[0] + wide]
        count = int(block.sum())
        assert box.flatten()[:count].all() and not box.flatten()[count:].any()  # row-major fill
        assert high_ == math.ceil(count / wide)
        aspects.append(high_ / wide)
    aspects = torch.tensor(aspects)
    assert 0.75 / 1.4 <= float(aspects.min()) and float(aspects.max()) <= 1.5 * 1.4  # within rounding of a row
    assert 0.75 <= float(aspects.mean()) <= 1.5


def test_context_excludes_every_target_and_the_mask_records_the_hidden_share():
    tokens = grid_tokens((14, 14), batch=16)
    mask = MultiBlockMasker()(tokens, 0.0, gen(3))
    union = mask.target_blocks.any(1)
    visible = ~mask.masked
    assert not bool((visible & union).any())  # no target token is seen
    assert torch.equal(mask.decode, union) and torch.equal(mask.targets, union)
    for b in range(16):  # what is seen fits in one box of ~ 0.85-1.0 of the grid (the context block)
        seen = visible[b].view(14, 14)
        rows, cols = seen.any(1).nonzero(), seen.any(0).nonzero()
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) >= int(seen.sum())
        assert int((seen | union[b].view(14, 14)).sum()) >= round(0.85 * 196) - 14  # context block, last row short
    share = mask.masked.sum(1).double() / 196
    torch.testing.assert_close(mask.ratio.double(), share)
    assert mask.ids_keep.shape[1] == int(visible.sum(1).max())  # ragged counts padded as every masker's
    assert torch.equal(mask.keep_valid.sum(1), visible.sum(1))


def test_same_seed_same_blocks_other_seed_other_blocks():
    tokens = grid_tokens((14, 14))
    masker = MultiBlockMasker()
    a, b, c = masker(tokens, 0.0, gen(7)), masker(tokens, 0.0, gen(7)), masker(tokens, 0.0, gen(8))
    assert torch.equal(a.target_blocks, b.target_blocks) and torch.equal(a.masked, b.masked)
    assert not torch.equal(a.target_blocks, c.target_blocks)


def test_tubes_on_a_3d_grid_span_every_time_slot_and_follow_the_block_sets():
    """V-JEPA: short-range (8 x 0.15) and long-range (2 x 0.7) tubes over all 8 slots of 8 x 14 x 14;
    no context block: everything outside the targets is seen."""
    masker = MultiBlockMasker(block_sets=((8, 0.15, 0.15), (2, 0.7, 0.7)), context_scale=None)
    mask = masker(grid_tokens((8, 14, 14), batch=6), 0.0, gen(1))
    blocks = mask.target_blocks.view(6, 8, 8, 196)  # [B, M, T, H * W]
    assert torch.equal(blocks, blocks[:, :, :1].expand_as(blocks))  # the same places in every slot
    places = blocks[:, :, 0].sum(-1)  # [B, M]
    assert places[0::2].tolist() == [[29] * 8] * 3  # round(0.15 * 196), sets alternate by sample
    assert places[1::2].tolist() == [[137, 137] + [0] * 6] * 3  # round(0.7 * 196), unused blocks empty
    torch.testing.assert_close(mask.ratio.double(), mask.target_blocks.any(1).double().mean(1))
    assert torch.equal(mask.masked, mask.target_blocks.any(1))
    assert float(mask.ratio[0::2].mean()) > 0.5  # ~1 - 0.85^8 of the places hidden by short-range tubes


def test_target_slots_below_one_give_shorter_tubes():
    mask = MultiBlockMasker(target_slots=(0.5, 0.5), context_scale=None)(grid_tokens((8, 7, 7), batch=4), 0.0, gen())
    slots = mask.target_blocks.view(4, 4, 8, 49).any(-1).sum(-1)
    assert bool((slots == 4).all())


def test_blocks_on_coordinates_are_nearest_neighbour_sets_of_real_tokens():
    g = gen(5)
    coords = torch.rand(4, 64, 3, generator=g)
    valid = torch.ones(4, 64, dtype=torch.bool)
    valid[1, 40:] = False  # a ragged sample
    tokens = Tokens(torch.zeros(4, 64, 6), coords, valid=valid)
    mask = MultiBlockMasker(target_scale=(0.2, 0.2))(tokens, 0.0, gen(2))
    blocks = mask.target_blocks
    n_real = valid.sum(1)
    assert not bool((blocks & ~valid[:, None]).any()) and not bool((mask.masked & ~valid).any())
    for b in range(4):
        want = math.floor(0.2 * int(n_real[b]) + 0.5)
        for block in blocks[b]:
            assert int(block.sum()) == want
            members = block.nonzero().squeeze(1)
            # some member is the seed: the block is exactly the `want` real tokens nearest to it
            distance = torch.cdist(coords[b, members], coords[b]).masked_fill(~valid[b], math.inf)
            nearest = distance.argsort(1)[:, :want].sort(1).values
            assert bool((nearest == members[None]).all(1).any())
    torch.testing.assert_close(mask.ratio.double(), mask.masked.sum(1).double() / n_real.double())


def test_a_varying_schedule_is_refused_naming_the_masker():
    for schedule in (LinearRatio(), UniformRatio()):
        with pytest.raises(ValueError, match="MultiBlockMasker.*schedule.*" + type(schedule).__name__):
            tiny_model(schedule=schedule)
    MultiBlockMasker().check_schedule(ConstantRatio(0.5))  # constant: allowed, its value ignored
    RandomMasker().check_schedule(LinearRatio())  # a masker that reads the ratio takes any schedule


def test_the_ratio_argument_is_checked_as_every_maskers():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MultiBlockMasker()(grid_tokens((4, 4)), 1.5, gen())


# ---- JEPAModel ---------------------------------------------------------------------------------
def tiny_model(dim=32, **kw):
    return JEPAModel(ImageAdapter(img_size=28, patch_size=4, in_chans=1, dim=dim), kw.pop("masker", MultiBlockMasker()),
                     ViTEncoder(dim=dim, depth=2, num_heads=2), JEPAPredictor(in_dim=dim, dim=16, depth=1, num_heads=2),
                     EMATeacherTarget(latent_dim=dim, normalize=True, momentum=0.996, end_momentum=1.0,
                                      momentum_curve="linear"), **kw)


def images(batch=4, seed=0):
    return {"image": torch.randn(batch, 1, 28, 28, generator=gen(seed))}


@pytest.mark.parametrize("per_block", [True, False])
def test_forward_backward_reaches_encoder_and_predictor_never_the_teacher(per_block):
    model = tiny_model(per_block=per_block, loss=L1Loss() if not per_block else None)
    out = model(images(), generator=gen())
    blocks = out.mask.target_blocks
    rows = int(blocks.any(-1).sum()) if per_block else 4
    assert out.pred.shape[0] == rows and out.pred.shape[2] == 32
    assert int(out.extras["pred_valid"].sum()) == int(blocks.sum() if per_block else blocks.any(1).sum())
    assert torch.isfinite(out.loss) and float(out.stats["target_std"]) > 0.1
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is not None for n in grads if n.startswith(("encoder.", "predictor.", "adapter.")))
    assert all(grads[n] is None for n in grads if n.startswith("target."))
    assert model(images(), generator=gen(), mask_only=True).pred is None
    with pytest.raises(NotImplementedError):
        model.render(images(), out, "/tmp/never.png")


def test_ema_teacher_follows_the_linear_momentum_and_stays_out_of_the_optimizer():
    model = tiny_model()
    teacher_ids = {id(p) for p in model.target.parameters()}
    groups = model.param_groups(0.04)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert teacher_ids and not (teacher_ids & in_optimizer)
    assert in_optimizer == {id(p) for n, p in model.named_parameters() if not n.startswith("target.")}
    opt = torch.optim.AdamW(groups, lr=1e-2)
    name = "blocks.0.attn.qkv.weight"
    before = model.target.teacher_encoder.state_dict()[name].clone()
    model(images(), generator=gen()).loss.backward()
    opt.step()
    model.after_step(0.25)  # momentum 0.996 + 0.25 * (1 - 0.996) = 0.997
    student = model.encoder.state_dict()[name]
    torch.testing.assert_close(model.target.teacher_encoder.state_dict()[name], 0.997 * before + 0.003 * student)
    frozen = model.target.teacher_encoder.state_dict()[name].clone()
    model.after_step(1.0)  # momentum 1.0: the teacher stops moving
    torch.testing.assert_close(model.target.teacher_encoder.state_dict()[name], frozen)


def test_features_read_the_online_or_the_target_encoder():
    model = tiny_model(probe_target_encoder=False)
    with torch.no_grad():
        model.encoder.blocks[0].attn.qkv.weight.add_(1.0)  # student and teacher now differ
    online, valid = model.features(images())
    assert online.shape == (4, 49, 32) and bool(valid.all())
    model.probe_target_encoder = True
    teacher, _ = model.features(images())
    assert not torch.allclose(online, teacher)
    with pytest.raises(ValueError, match="probe_target_encoder"):
        JEPAModel(ImageAdapter(img_size=28, patch_size=4, in_chans=1, dim=32), MultiBlockMasker(),
                  ViTEncoder(dim=32, depth=1, num_heads=2), JEPAPredictor(in_dim=32, dim=16, depth=1, num_heads=2),
                  target=PixelTarget(), probe_target_encoder=True)


def test_any_masker_plugs_in_its_hidden_tokens_one_block():
    model = tiny_model(masker=RandomMasker(), schedule=ConstantRatio(0.75))
    out = model(images(), generator=gen())
    assert out.mask.target_blocks is None and out.pred.shape[:2] == (4, 37)  # round(0.75 * 49) per image


# ---- recipes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_build_under_smoke(recipe):
    from unimask.cli import parse_gin

    parse_gin([os.path.join("gin", recipe), SMOKE], ["train.num_workers=0"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    assert isinstance(model, JEPAModel) and sum(p.numel() for p in model.parameters()) < 2_000_000
    gin.clear_config()


def test_ijepa_cpu_trains_under_smoke_with_falling_loss_and_no_collapse(tmp_path):
    workdir = str(tmp_path / "run")
    code, output, _ = cli(["tools/train.py", "--gin", "gin/ijepa_cpu.gin", "--gin", SMOKE, "--workdir", workdir],
                          WORKERS, timeout=240)
    assert code == 0, output[-3000:]
    rows = read_metrics(workdir)
    losses = [r["loss"] for r in rows]
    assert len(rows) == 30 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert min(r["target_std"] for r in rows) > 0.2, [r["target_std"] for r in rows]
    assert all(0.2 < r["mask_ratio"] < 0.9 for r in rows)
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert evals[-1] < evals[0], evals
    # I-JEPA's weight decay rises on a half cosine, 0.04 -> 0.4 (train.final_weight_decay)
    decays = [r["weight_decay"] for r in rows]
    assert decays[0] == pytest.approx(0.04) and decays == sorted(decays) and decays[-1] > 0.39
    assert decays[15] == pytest.approx(0.04 + 0.36 * 0.5 * (1 - math.cos(math.pi * 15 / 30)))
