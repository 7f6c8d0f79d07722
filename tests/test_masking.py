"""The masking library: the counting rule for every masker, each masker's own pattern,
learned maskers' gradients, schedules, dual masking through MaskedModel, tools/visualize.py."""
import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SMOKE, fast_params, image_batch, run_train, tiny_image_model
from unimask.masking import (AdaptiveMasker, BlockMasker, ChannelGroupMasker, ConstantRatio, CosineRatio,
                             DirichletMasker, FrameMasker, HardPatchMasker, LinearRatio, NoiseMasker,
                             PointBlockMasker, RandomMasker, RunningCellMasker, SpanMasker, StepRatio, TubeMasker,
                             UniformRatio)
from unimask.tokens import Tokens

RATIOS = [0.0, 0.5, 0.75, 0.9]
FEATURE_DIM = 16


# ---- token layouts -------------------------------------------------------------------------
def grid_tokens(grid=(8, 4, 4), batch=2, group=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.tensor(grid).prod())
    axes = torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij")
    coords = torch.stack(axes, -1).reshape(1, n, len(grid)).expand(batch, -1, -1)
    return Tokens(torch.randn(batch, n, 6, generator=gen), coords, grid=grid, group=group)


def grouped_tokens(groups=3, side=6, batch=2):
    """Group-major tokens on a (G, H, W) grid, as a channel-group adapter lays them out."""
    return grid_tokens((groups, side, side), batch, group=torch.arange(groups).repeat_interleave(side * side))


def ragged_tokens(n=40, lengths=(40, 25), seed=0):
    """Token sets of unequal size (padding at the tail), xyz coords, two alternating groups."""
    gen = torch.Generator().manual_seed(seed)
    valid = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return Tokens(torch.randn(len(lengths), n, 6, generator=gen), torch.randn(len(lengths), n, 3, generator=gen),
                  valid=valid, group=torch.arange(n) % 2)


def call(masker, tokens, ratio, seed=0):
    """Masker call with random features for the learned ones (what MaskedModel would embed)."""
    gen = torch.Generator().manual_seed(seed)
    if getattr(masker, "needs_features", False):
        features = torch.randn(tokens.batch_size, tokens.num_tokens, FEATURE_DIM, generator=torch.Generator().manual_seed(1))
        return masker(tokens, ratio, gen, features=features)
    return masker(tokens, ratio, gen)


def rounded(ratio, n):
    return int(ratio * n + 0.5)


# name: (masker factory, tokens factory, expected hidden tokens per sample)
CASES = {
    "random": (RandomMasker, ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "random_cells": (lambda: RandomMasker(unit=(2, 2)), lambda: grid_tokens((14, 14)),
                     lambda r, t: [4 * rounded(r, 49)] * 2),
    "tube": (TubeMasker, grid_tokens, lambda r, t: [8 * rounded(r, 16)] * 2),
    "frame": (FrameMasker, grid_tokens, lambda r, t: [16 * rounded(r, 8)] * 2),
    "running_cell": (RunningCellMasker, grid_tokens, lambda r, t: [rounded(r, 128)] * 2),
    "span": (SpanMasker, ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "span_fixed": (lambda: SpanMasker(length=3), ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "span_time": (lambda: SpanMasker(axis=0), grid_tokens, lambda r, t: [16 * rounded(r, 8)] * 2),
    "block_2d": (BlockMasker, lambda: grid_tokens((14, 14)), lambda r, t: [rounded(r, 196)] * 2),
    "block_slot": (BlockMasker, lambda: grid_tokens((4, 8, 8)), lambda r, t: [rounded(r, 256)] * 2),
    "block_cube": (lambda: BlockMasker(mode="cube"), lambda: grid_tokens((4, 8, 8)),
                   lambda r, t: [rounded(r, 256)] * 2),
    "point_block": (PointBlockMasker, ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "noise_red": (lambda: NoiseMasker("red"), grid_tokens, lambda r, t: [8 * rounded(r, 16)] * 2),
    "noise_blue": (lambda: NoiseMasker("blue", per_slot=True), grid_tokens, lambda r, t: [rounded(r, 128)] * 2),
    "noise_green": (lambda: NoiseMasker("green"), lambda: grid_tokens((14, 14)), lambda r, t: [rounded(r, 196)] * 2),
    "noise_purple": (lambda: NoiseMasker("purple"), lambda: grid_tokens((14, 14)),
                     lambda r, t: [rounded(r, 196)] * 2),
    "group_independent": (ChannelGroupMasker, grouped_tokens, lambda r, t: [rounded(r, 108)] * 2),
    "group_consistent": (lambda: ChannelGroupMasker("consistent"), grouped_tokens,
                         lambda r, t: [3 * rounded(r, 36)] * 2),
    "group_independent_ragged": (ChannelGroupMasker, ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "dirichlet": (DirichletMasker, ragged_tokens, lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "adaptive": (lambda: AdaptiveMasker(dim=FEATURE_DIM, num_heads=2), ragged_tokens,
                 lambda r, t: [rounded(r, 40), rounded(r, 25)]),
    "hard_patch": (lambda: HardPatchMasker(dim=FEATURE_DIM, num_heads=2), ragged_tokens,
                   lambda r, t: [rounded(r, 40), rounded(r, 25)]),
}


# ---- the counting rule, determinism, padding --------------------------------------------------
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("name", list(CASES))
def test_exact_count_and_index_views(name, ratio):
    make_masker, make_tokens, expected = CASES[name]
    tokens = make_tokens()
    mask = call(make_masker(), tokens, ratio)
    valid = tokens.valid_mask()
    assert mask.masked.sum(1).tolist() == expected(ratio, tokens)
    assert not bool((mask.masked & ~valid).any())  # padding never hidden
    kept = torch.gather(valid & ~mask.masked, 1, mask.ids_keep)
    assert torch.equal(kept, mask.keep_valid)  # every kept slot is a real visible token, padding slots flagged
    assert mask.keep_valid.sum(1).tolist() == (valid & ~mask.masked).sum(1).tolist()  # padding never visible


@pytest.mark.parametrize("name", list(CASES))
def test_same_seed_same_mask(name):
    make_masker, make_tokens, _ = CASES[name]
    masker, tokens = make_masker(), make_tokens()
    first = call(masker, tokens, 0.5, seed=3).masked
    assert torch.equal(first, call(masker, tokens, 0.5, seed=3).masked)
    assert any(not torch.equal(first, call(masker, tokens, 0.5, seed=s).masked) for s in range(4, 10))


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan")])
@pytest.mark.parametrize("name", ["random", "tube", "block_2d", "span", "dirichlet", "adaptive"])
def test_ratio_out_of_range_is_a_clear_error(name, bad):
    make_masker, make_tokens, _ = CASES[name]
    with pytest.raises(ValueError, match="ratio"):
        call(make_masker(), make_tokens(), bad)
    with pytest.raises(ValueError, match="ratio"):
        call(make_masker(), make_tokens(), torch.tensor([0.5, bad]))


def test_per_sample_ratios_are_honoured():
    tokens = ragged_tokens()
    mask = RandomMasker()(tokens, torch.tensor([0.25, 0.8]), torch.Generator().manual_seed(0))
    assert mask.masked.sum(1).tolist() == [10, 20] and mask.ratio.tolist() == pytest.approx([0.25, 0.8])


@pytest.mark.parametrize("name", ["random", "span", "point_block", "dirichlet", "adaptive", "hard_patch"])
def test_a_sample_without_real_tokens_gets_an_empty_mask(name):
    make_masker, _, _ = CASES[name]
    tokens = ragged_tokens(lengths=(40, 0))  # a modality missing from sample 1
    mask = call(make_masker(), tokens, 0.5)
    assert mask.masked.sum(1).tolist() == [20, 0] and mask.keep_valid.sum(1).tolist() == [20, 0]


def test_maskers_without_their_layout_say_what_is_missing():
    with pytest.raises(ValueError, match="grid"):
        BlockMasker()(ragged_tokens(), 0.5)
    with pytest.raises(ValueError, match="group"):
        ChannelGroupMasker()(grid_tokens(), 0.5)
    with pytest.raises(ValueError, match="features"):
        AdaptiveMasker(dim=FEATURE_DIM, num_heads=2)(ragged_tokens(), 0.5)


# ---- each masker's own pattern --------------------------------------------------------------
def components(hidden_2d: torch.Tensor) -> list:
    """Sizes of the 4-connected components of a [H, W] bool map."""
    h, w = hidden_2d.shape
    cells = {(i, j) for i in range(h) for j in range(w) if hidden_2d[i, j]}
    sizes = []
    while cells:
        stack, size = [cells.pop()], 0
        while stack:
            i, j = stack.pop()
            size += 1
            for nb in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if nb in cells:
                    cells.remove(nb)
                    stack.append(nb)
        sizes.append(size)
    return sizes


def mean_components(masker, tokens, side, seeds=range(8)):
    counts = [len(components(masker(tokens, 0.4, torch.Generator().manual_seed(s)).masked[b].view(side, side)))
              for s in seeds for b in range(tokens.batch_size)]
    return sum(counts) / len(counts)


def test_blocks_are_contiguous():
    tokens = grid_tokens((14, 14))
    blocks, scattered = mean_components(BlockMasker(), tokens, 14), mean_components(RandomMasker(), tokens, 14)
    assert blocks < scattered / 3, (blocks, scattered)
    biggest = max(components(BlockMasker()(tokens, 0.4, torch.Generator().manual_seed(0)).masked[0].view(14, 14)))
    assert biggest >= 16  # at least one BEiT block of min_block tokens


def test_cube_blocks_span_time_slot_blocks_do_not_align():
    tokens = grid_tokens((4, 10, 10), batch=4)
    cube = BlockMasker(mode="cube")(tokens, 0.5, torch.Generator().manual_seed(0)).masked.view(4, 4, 100)
    slot = BlockMasker(mode="slot")(tokens, 0.5, torch.Generator().manual_seed(0)).masked.view(4, 4, 100)
    overlap = lambda m: (m[:, 0] & m[:, 1]).sum() / m[:, 0].sum()  # noqa: E731  share of slot 0 also hidden in slot 1
    assert overlap(cube) > overlap(slot) + 0.15, (overlap(cube), overlap(slot))


def test_red_noise_makes_blobs_blue_noise_scatters():
    tokens = grid_tokens((16, 16))
    red = mean_components(NoiseMasker("red", sigma=1.5), tokens, 16)
    blue = mean_components(NoiseMasker("blue", sigma=1.5), tokens, 16)
    assert red * 2 < blue, (red, blue)


def test_spans_are_contiguous_runs():
    tokens = Tokens(torch.zeros(4, 200, 1), torch.zeros(4, 200, 1))
    runs = lambda m: int((m[:, 1:] & ~m[:, :-1]).sum() + m[:, 0].sum()) / m.shape[0]  # noqa: E731
    spans = SpanMasker(length=5)(tokens, 0.3, torch.Generator().manual_seed(0)).masked
    scattered = RandomMasker()(tokens, 0.3, torch.Generator().manual_seed(0)).masked
    assert runs(spans) <= 60 / 5 and runs(scattered) > 30  # 60 hidden tokens in runs of 5 (adjacent runs merge)


def test_span_along_time_hides_whole_consecutive_slots():
    mask = SpanMasker(axis=0, length=3)(grid_tokens((12, 2, 2)), 0.5, torch.Generator().manual_seed(0))
    per_slot = mask.masked.view(2, 12, 4)
    assert bool(((per_slot.sum(2) == 0) | (per_slot.sum(2) == 4)).all())  # slots hidden whole
    assert per_slot[:, :, 0].sum(1).tolist() == [6, 6]


def test_tube_is_identical_across_time_and_frames_are_whole():
    tube = TubeMasker()(grid_tokens(), 0.75, torch.Generator().manual_seed(1)).masked.view(2, 8, 16)
    assert bool((tube == tube[:, :1]).all()) and tube[:, 0].sum(1).tolist() == [12, 12]
    shared = NoiseMasker("green")(grid_tokens(), 0.5, torch.Generator().manual_seed(1)).masked.view(2, 8, 16)
    assert bool((shared == shared[:, :1]).all())  # one noise pattern for all slots unless per_slot
    frames = FrameMasker()(grid_tokens(), 0.75, torch.Generator().manual_seed(1)).masked.view(2, 8, 16)
    assert bool(((frames.sum(2) == 0) | (frames.sum(2) == 16)).all()) and (frames.sum(2) == 16).sum(1).tolist() == [6, 6]


def test_running_cell_pattern_rotates_with_time():
    mask = RunningCellMasker()(grid_tokens((8, 4, 4), batch=3), 0.5, torch.Generator().manual_seed(0))
    cells = mask.masked.view(3, 8, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(3, 8, 4, 4)  # [B, T, cell, position]
    assert bool((cells.sum(-1) == 2).all())  # 2 of the 4 positions of every cell hidden in every slot
    assert bool((cells == cells[:, :, :1]).all())  # every cell runs the same pattern
    assert bool((cells[:, 1:] != cells[:, :-1]).any(-1).all())  # it shifts from one slot to the next
    assert torch.equal(cells[:, 4:], cells[:, :4])  # with period 4 (t mod 4)
    assert bool((cells[:, :4].sum(1) == 2).all())  # each position hidden in 2 of every 4 slots
    quarter = RunningCellMasker()(grid_tokens((4, 4, 4)), 0.75, torch.Generator().manual_seed(0)).masked
    assert bool((quarter.view(2, 4, 2, 2, 2, 2).sum((3, 5)) == 3).all())  # ratio 0.75: 3 of 4 per cell


def test_channel_group_modes():
    tokens = grouped_tokens(groups=3, side=6, batch=2)
    consistent = ChannelGroupMasker("consistent")(tokens, 0.5, torch.Generator().manual_seed(0)).masked.view(2, 3, 36)
    assert bool((consistent == consistent[:, :1]).all()) and consistent[:, 0].sum(1).tolist() == [18, 18]
    independent = ChannelGroupMasker("independent")(tokens, 0.5, torch.Generator().manual_seed(0)).masked.view(2, 3, 36)
    assert independent.sum(2).tolist() == [[18, 18, 18]] * 2  # each group hides its own share
    assert not bool((independent == independent[:, :1]).all())  # at its own places
    with pytest.raises(ValueError, match="equal size"):
        ChannelGroupMasker("consistent")(Tokens(torch.zeros(1, 5, 1), torch.zeros(1, 5, 1),
                                                group=torch.tensor([0, 0, 0, 1, 1])), 0.5)


def test_dirichlet_splits_the_visible_budget_across_groups():
    group = torch.arange(4).repeat_interleave(50)
    tokens = Tokens(torch.zeros(64, 200, 1), torch.zeros(64, 200, 1), group=group)
    lopsided = DirichletMasker(alpha=0.1)(tokens, 0.8, torch.Generator().manual_seed(0))
    even = DirichletMasker(alpha=100.0)(tokens, 0.8, torch.Generator().manual_seed(0))
    top_share = lambda m: ((~m.masked).view(64, 4, 50).sum(2).max(1).values / 40.0).mean()  # noqa: E731
    assert float(top_share(lopsided)) > 0.75 and float(top_share(even)) < 0.45
    absent = tokens.replace(valid=(group != 3)[None].expand(64, -1).clone())  # group 3 missing everywhere
    mask = DirichletMasker(alpha=1.0)(absent, 0.8, torch.Generator().manual_seed(0))
    assert mask.masked.sum(1).eq(120).all() and (~mask.masked & absent.valid).sum(1).eq(30).all()


def test_point_block_hides_a_ball_of_nearest_neighbours():
    tokens = ragged_tokens()
    mask = PointBlockMasker()(tokens, 0.5, torch.Generator().manual_seed(0))
    for b in range(2):
        valid = tokens.valid_mask()[b]
        hidden, visible = mask.masked[b] & valid, ~mask.masked[b] & valid
        dist = torch.cdist(tokens.coords[b], tokens.coords[b])  # [N, N]
        ball = (dist[:, hidden].max(1).values <= dist[:, visible].min(1).values) & hidden  # seeds that explain it
        assert bool(ball.any())


# ---- learned maskers ---------------------------------------------------------------------------
def test_adaptive_masker_policy_gradient_favours_hard_tokens():
    torch.manual_seed(0)
    masker = AdaptiveMasker(dim=FEATURE_DIM, num_heads=2, weight=1.0)
    tokens = ragged_tokens()
    features = torch.randn(2, 40, FEATURE_DIM)
    mask = masker(tokens, 0.5, torch.Generator().manual_seed(0), features=features)
    hard = torch.nonzero(mask.masked[0])[0, 0]  # a hidden token that reconstructed badly
    token_loss = mask.masked.float() * 0.1
    token_loss[0, hard] = 5.0
    before = mask.aux["log_probs"][0, hard].item()
    masker.aux_loss(mask, token_loss).backward()
    grads = [p.grad for p in masker.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    with torch.no_grad():
        for p in masker.parameters():
            p -= 0.5 * p.grad
    after = masker(tokens, 0.5, torch.Generator().manual_seed(0), features=features).aux["log_probs"][0, hard].item()
    assert after > before  # AdaMAE: hard hidden tokens become likelier to be sampled visible


def test_hard_patch_masker_mines_hard_tokens_by_progress_and_learns_the_ranking():
    torch.manual_seed(0)
    masker = HardPatchMasker(dim=FEATURE_DIM, num_heads=2, max_hard=1.0)
    tokens = ragged_tokens()
    features = torch.randn(2, 40, FEATURE_DIM)
    masker.after_step(1.0)  # fully hard: the hidden tokens are exactly the top predicted losses
    mask = masker(tokens, 0.5, torch.Generator().manual_seed(0), features=features)
    predicted = mask.aux["predicted_loss"].detach().masked_fill(~tokens.valid_mask(), float("-inf"))
    top = torch.zeros_like(mask.masked).scatter(1, predicted.topk(20, dim=1).indices, True)
    assert torch.equal(mask.masked[0], top[0])
    assert "progress" in masker.state_dict() and float(masker.state_dict()["progress"]) == 1.0
    masker.after_step(0.0)  # easy start: plain random masking, not the top predictions
    early = masker(tokens, 0.5, torch.Generator().manual_seed(0), features=features)
    assert not torch.equal(early.masked[0], top[0])
    # relative loss: low when the predicted order matches the real one, and it trains the predictor
    real = torch.rand(2, 40)
    agree = dict(mask.aux, predicted_loss=real * 10)
    disagree = dict(mask.aux, predicted_loss=-real * 10)
    assert masker.aux_loss(dataclasses.replace(mask, aux=agree), real) < \
        masker.aux_loss(dataclasses.replace(mask, aux=disagree), real)
    masker.aux_loss(mask, real).backward()
    assert all(p.grad is not None for p in masker.predictor.parameters())
    masker.pair_tokens = 8  # long token sets: the pairs are taken over a random subset
    assert torch.isfinite(masker.aux_loss(mask, real))


@pytest.mark.parametrize("masker_cls", [AdaptiveMasker, HardPatchMasker])
def test_learned_maskers_train_inside_masked_model(masker_cls):
    model = tiny_image_model(masker=masker_cls(dim=32, num_heads=2))
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    assert "aux_loss" in out.extras and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.masker.parameters())
    model.after_step(0.5)


# ---- schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, values", [
    (ConstantRatio(0.75), [0.75, 0.75, 0.75]),
    (LinearRatio(0.5, 0.9), [0.5, 0.7, 0.9]),
    (CosineRatio(0.5, 0.9), [0.5, 0.7, 0.9]),
    (StepRatio((0.5, 0.75, 0.9), (0.25, 0.75)), [0.5, 0.75, 0.9]),
])
def test_schedule_values_and_state_dict(schedule, values):
    assert [float(schedule(p, 3)[0]) for p in (0.0, 0.5, 1.0)] == pytest.approx(values)
    assert schedule(0.5, 3).shape == (3,)
    restored = type(schedule)()
    restored.load_state_dict(schedule.state_dict())
    assert [float(restored(p, 1)[0]) for p in (0.0, 0.5, 1.0)] == pytest.approx(values)
    with pytest.raises(KeyError, match="unknown"):
        restored.load_state_dict({"nope": 1})


def test_uniform_schedule_is_per_sample_and_seeded():
    schedule = UniformRatio(0.1, 0.6)
    a = schedule(0.0, 64, torch.Generator().manual_seed(0))
    assert torch.equal(a, schedule(0.7, 64, torch.Generator().manual_seed(0)))
    assert bool(((a >= 0.1) & (a < 0.6)).all()) and a.std() > 0.05
    restored = UniformRatio()
    restored.load_state_dict(schedule.state_dict())
    assert torch.equal(restored(0.0, 64, torch.Generator().manual_seed(0)), a)


# ---- dual masking (VideoMAE v2) through the model ------------------------------------------------
def test_dual_masking_decodes_only_the_running_cell_subset():
    model = tiny_image_model(ratio=0.75, decoder_masker=RunningCellMasker(), decoder_ratio=0.5)
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    mask = out.mask
    assert mask.masked.sum(1).tolist() == [12] * 4
    assert bool((mask.decode <= mask.masked).all()) and mask.decode.sum(1).tolist() == [6] * 4
    scored = torch.zeros_like(mask.masked, dtype=torch.float).scatter(1, out.extras["dec_ids"], out.extras["token_loss"].detach())
    assert bool((scored[~mask.decode] == 0).all()) and bool((scored[mask.decode] > 0).all())
    values, _ = model.target(out.tokens, model.adapter)
    pred = model.full_prediction(out)
    expected = ((pred - values) ** 2).mean(-1)[mask.decode].mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()
    assert model.decoder.head.weight.grad.abs().sum() > 0


def test_dual_masking_copes_with_a_sample_that_hides_nothing():
    model = tiny_image_model(decoder_masker=RunningCellMasker(), decoder_ratio=0.5)
    model.schedule = lambda progress, batch, generator=None: torch.tensor([0.0, 0.75, 0.75, 0.75])
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    assert out.mask.decode.sum(1).tolist() == [0, 6, 6, 6] and torch.isfinite(out.loss)


def test_running_cell_keeps_its_pattern_under_a_tube_mask():
    tokens = grid_tokens((8, 4, 4))
    tube = TubeMasker()(tokens, 0.75, torch.Generator().manual_seed(0))
    decode = RunningCellMasker()(tokens.replace(valid=tube.masked), 0.5, torch.Generator().manual_seed(1))
    decoded = (tube.masked & ~decode.masked).view(2, 2, 4, 16)  # [B, 4-slot window, slot, place]
    hidden_places = tube.masked.view(2, 8, 16)[:, 0]
    assert bool((decoded.sum(2)[hidden_places[:, None].expand(-1, 2, -1)] == 2).all())  # 2 of every 4 slots


# ---- tools/visualize.py ---------------------------------------------------------------------
def test_visualize_masks_and_recon_on_a_smoke_run(tmp_path, root, monkeypatch):
    import visualize

    monkeypatch.chdir(root)
    workdir = str(tmp_path / "run")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=3")]) == 0
    masks_png, recon_png, strip_png = (str(tmp_path / name) for name in ("masks.png", "recon.png", "strip.png"))
    visualize.main(["masks", "--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--out", masks_png])
    visualize.main(["recon", "--checkpoint", os.path.join(workdir, "checkpoints", "last.pt"), "--out", recon_png,
                    "--device", "cpu"])
    visualize.main(["masks", "--gin", "gin/video_mae.gin", "--gin", SMOKE, "--out", strip_png])
    for path in (masks_png, recon_png, strip_png):
        with Image.open(path) as img:
            pixels = torch.from_numpy(np.array(img.convert("L"))).float()
        assert pixels.numel() > 100 * 100 and pixels.std() > 10, path
    with Image.open(strip_png) as strip, Image.open(masks_png) as sheet:
        assert strip.height > 4 * strip.width  # one time strip per masker, stacked
        assert sheet.width > sheet.height / 2  # tiles laid out in rows of four
