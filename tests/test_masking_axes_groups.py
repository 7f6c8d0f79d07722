"""Maskers along an axis (FrameMasker, RunningCellMasker, SpanMasker) and over token groups
(ChannelGroupMasker, DirichletMasker): exact counts, patterns, ragged batches, dual masking."""
import numpy as np
import pytest
import torch

from helpers import image_batch, tiny_image_model
from modalities.video import VideoAdapter
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder
from unimask.masking import (ChannelGroupMasker, ConstantRatio, DirichletMasker, FrameMasker, RunningCellMasker,
                             SpanMasker, TubeMasker)
from unimask.masking.groups import sample_gamma
from unimask.models.masked import MaskedModel
from unimask.targets import PixelTarget
from unimask.tokens import Tokens

RATIOS = [0.0, 0.5, 0.75, 0.9]


def grid_tokens(batch, grid, valid=None, group=None, seed=0):
    """Random patches on a row-major grid with integer grid coordinates."""
    n = int(np.prod(grid))
    axes = torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij")
    coords = torch.stack(axes, -1).reshape(1, n, len(grid)).expand(batch, -1, -1)
    patches = torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(seed))
    return Tokens(patches, coords, valid=valid, grid=grid, group=group)


def hidden_of(masker, tokens, ratio, seed=0):
    return masker(tokens, ratio, torch.Generator().manual_seed(seed)).masked


def round_half_up(x):
    return int(np.floor(x + 0.5))


def ragged_valid(batch, n, lengths):
    return torch.arange(n)[None].expand(batch, -1) < torch.tensor(lengths)[:, None]


GROUPS_3x49 = torch.arange(3).repeat_interleave(49)  # 3 channel groups over a 7x7 grid each

# (masker, tokens, expected hidden tokens per sample as a function of the ratio)
CASES = {
    "frame": (FrameMasker(), lambda: grid_tokens(3, (8, 4, 4)), lambda r: 16 * round_half_up(r * 8)),
    "frame_axis2": (FrameMasker(axis=2), lambda: grid_tokens(2, (2, 3, 10)), lambda r: 6 * round_half_up(r * 10)),
    "running_cell": (RunningCellMasker(), lambda: grid_tokens(3, (8, 6, 6)), lambda r: round_half_up(r * 288)),
    "running_cell_odd": (RunningCellMasker(), lambda: grid_tokens(2, (3, 5, 7)), lambda r: round_half_up(r * 105)),
    "span_tokens": (SpanMasker(), lambda: grid_tokens(3, (10, 20)), lambda r: round_half_up(r * 200)),
    "span_fixed": (SpanMasker(length=4), lambda: Tokens(torch.randn(3, 97, 2), torch.randn(3, 97, 1)),
                   lambda r: round_half_up(r * 97)),
    "span_time": (SpanMasker(axis=0), lambda: grid_tokens(2, (16, 3, 3)), lambda r: 9 * round_half_up(r * 16)),
    "group_independent": (ChannelGroupMasker("independent"), lambda: grid_tokens(3, (3, 7, 7), group=GROUPS_3x49),
                          lambda r: round_half_up(r * 147)),
    "group_consistent": (ChannelGroupMasker("consistent"), lambda: grid_tokens(3, (3, 7, 7), group=GROUPS_3x49),
                         lambda r: 3 * round_half_up(r * 49)),
    "dirichlet": (DirichletMasker(alpha=1.0), lambda: grid_tokens(3, (3, 7, 7), group=GROUPS_3x49),
                  lambda r: round_half_up(r * 147)),
    "dirichlet_no_group": (DirichletMasker(alpha=0.5), lambda: grid_tokens(2, (5, 5)), lambda r: round_half_up(r * 25)),
}


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_count_and_determinism(case, ratio):
    masker, make_tokens, expected = CASES[case]
    tokens = make_tokens()
    mask = masker(tokens, ratio, torch.Generator().manual_seed(3))
    want = expected(ratio)
    assert mask.masked.sum(1).tolist() == [want] * tokens.batch_size
    assert mask.keep_valid.sum(1).tolist() == [tokens.num_tokens - want] * tokens.batch_size
    assert torch.equal(mask.masked, hidden_of(masker, tokens, ratio, seed=3))
    if ratio > 0:
        assert not torch.equal(mask.masked, hidden_of(masker, tokens, ratio, seed=4))


@pytest.mark.parametrize("masker", [FrameMasker(), RunningCellMasker(), SpanMasker(), SpanMasker(axis=0),
                                    ChannelGroupMasker("independent"), ChannelGroupMasker("consistent"),
                                    DirichletMasker(alpha=0.3)],
                         ids=lambda m: f"{type(m).__name__}-{vars(m)}")
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_ragged_padding_is_neither_hidden_nor_visible(masker, ratio):
    # grid (2, 4, 4) = 32 tokens in 2 groups of 16; sample 1 lacks its last time slot, sample 2 has 5 tokens
    valid = ragged_valid(3, 32, [32, 16, 5])
    tokens = grid_tokens(3, (2, 4, 4), valid=valid, group=torch.arange(2).repeat_interleave(16))
    mask = masker(tokens, ratio, torch.Generator().manual_seed(0))
    assert not bool((mask.masked & ~valid).any())
    visible = torch.gather(valid, 1, mask.ids_keep)
    assert bool(visible[mask.keep_valid].all())
    n_visible = (valid & ~mask.masked).sum(1)
    assert torch.equal(mask.keep_valid.sum(1), n_visible) and bool((n_visible >= 1).all())
    if not isinstance(masker, (FrameMasker, ChannelGroupMasker)) and not getattr(masker, "axis", None) == 0:
        assert mask.masked.sum(1).tolist() == [min(round_half_up(ratio * n), n - 1) for n in (32, 16, 5)]


def test_frame_masker_hides_whole_time_slots():
    mask = hidden_of(FrameMasker(), grid_tokens(4, (8, 3, 3)), 0.5).view(4, 8, 9)
    per_slot = mask.sum(2)
    assert bool(((per_slot == 0) | (per_slot == 9)).all()) and per_slot.eq(9).sum(1).tolist() == [4] * 4


def test_frame_masker_needs_the_axis():
    with pytest.raises(ValueError, match="grid"):
        FrameMasker()(Tokens(torch.randn(1, 5, 2), torch.randn(1, 5, 1)), 0.5)
    with pytest.raises(ValueError, match="axis=3"):
        FrameMasker(axis=3)(grid_tokens(1, (2, 3, 3)), 0.5)


def videomae_v2_running_cell(frames, height, width, n_masked, start):
    """The reference generator (VideoMAE v2 dataset/masking_generator.py), ported to numpy:
    a queue [1]*m + [0]*(4-m) read from a pointer that advances once per frame."""
    queue = np.hstack([np.ones(n_masked), np.zeros(4 - n_masked)])
    maps = []
    for frame in range(frames):
        pointer = start + frame + 1
        unit = queue[(np.arange(4) + pointer) % 4].reshape(2, 2)
        maps.append(np.tile(unit, [height // 2, width // 2]).flatten())
    return torch.from_numpy(np.stack(maps)).bool()  # [frames, H*W], True = masked


@pytest.mark.parametrize("ratio,n_masked", [(0.5, 2), (0.75, 3), (0.25, 1)])
def test_running_cell_matches_the_reference_pattern(ratio, n_masked):
    masks = hidden_of(RunningCellMasker(), grid_tokens(16, (8, 6, 8)), ratio).view(16, 8, 48)
    references = [videomae_v2_running_cell(8, 6, 8, n_masked, start) for start in range(4)]
    starts_seen = set()
    for sample in masks:
        matches = [i for i, ref in enumerate(references) if torch.equal(sample, ref)]
        assert len(matches) == 1
        starts_seen.update(matches)
    assert len(starts_seen) > 1  # the start of the cycle is random per sample


def test_running_cell_shifts_each_time_slot():
    mask = hidden_of(RunningCellMasker(), grid_tokens(2, (8, 4, 4)), 0.5).view(2, 8, 2, 2, 2, 2)  # [B, T, h//2, h%2, w//2, w%2]
    cells = mask.permute(0, 1, 2, 4, 3, 5).reshape(2, 8, 4, 4)  # [B, T, cell, position in cell]
    assert bool((cells.sum(-1) == 2).all())  # 2 of 4 positions per cell, every slot
    assert bool((cells == cells[:, :, :1]).all())  # every cell runs the same pattern
    # from slot t to t+1 the hidden positions move by one: position p at t+1 is position p+1 at t
    assert torch.equal(cells[:, 1:], torch.roll(cells[:, :-1], shifts=-1, dims=-1))
    assert not torch.equal(cells[:, 1:], cells[:, :-1])
    assert bool((cells.sum(1) == 4).all())  # each place hidden in exactly half of the 8 slots


def test_running_cell_as_decoder_masker_under_tube_masking_keeps_its_pattern():
    tokens = grid_tokens(4, (8, 6, 6))
    generator = torch.Generator().manual_seed(0)
    encoder_hidden = TubeMasker()(tokens, 0.75, generator).masked
    decoder_tokens = Tokens(tokens.patches, tokens.coords, encoder_hidden, tokens.grid)  # as MaskedModel.make_mask
    cell_hidden = RunningCellMasker()(decoder_tokens, 0.5, generator).masked
    decode = encoder_hidden & ~cell_hidden
    assert not bool((cell_hidden & ~encoder_hidden).any())
    assert torch.equal(decode.sum(1), encoder_hidden.sum(1) // 2)
    # no random top-up was needed: the hidden set is the pure running-cell pattern on the hidden tubes
    pattern = [videomae_v2_running_cell(8, 6, 6, 2, s).flatten() for s in range(4)]
    assert all(any(torch.equal(h, p & e) for p in pattern) for h, e in zip(cell_hidden, encoder_hidden))


def test_dual_masking_in_masked_model_scores_only_decoded_tokens():
    model = tiny_image_model(ratio=0.75, decoder_masker=RunningCellMasker(), decoder_ratio=0.5)
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    mask = out.mask
    assert mask.decode is not None and not bool((mask.decode & ~mask.masked).any())
    assert mask.masked.sum(1).tolist() == [12] * 4 and mask.decode.sum(1).tolist() == [6] * 4
    token_loss = torch.zeros(mask.masked.shape).scatter(1, out.extras["dec_ids"], out.extras["token_loss"].detach())
    assert not bool(token_loss[~mask.decode].any()) and bool((token_loss[mask.decode] > 0).all())
    assert torch.allclose(out.loss, token_loss.sum() / mask.decode.sum())
    out.loss.backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0 and model.decoder.head.weight.grad.abs().sum() > 0


def test_dual_masking_on_tubelets_decodes_half_of_the_hidden_tubes():
    dim = 32
    adapter = VideoAdapter(num_frames=8, img_size=16, patch_size=4, tubelet_size=2, dim=dim)  # grid (4, 4, 4)
    model = MaskedModel(adapter, TubeMasker(), ConstantRatio(0.75), ViTEncoder(dim=dim, depth=1, num_heads=2),
                        MAEDecoder(in_dim=dim, dim=dim, depth=1, num_heads=2), target=PixelTarget(),
                        decoder_masker=RunningCellMasker(), decoder_ratio=0.5)
    out = model({"video": torch.randn(2, 3, 8, 16, 16)}, generator=torch.Generator().manual_seed(1))
    mask = out.mask
    assert mask.masked.sum(1).tolist() == [48, 48] and mask.decode.sum(1).tolist() == [24, 24]
    decoded_slots = mask.decode.view(2, 4, 16).sum(1)  # per place: decoded in 2 of its 4 hidden slots
    assert set(decoded_slots[mask.masked.view(2, 4, 16)[:, 0]].tolist()) == {2}
    out.loss.backward()


def runs_of(hidden_row):
    """Lengths of the maximal runs of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), hidden_row, torch.tensor([False])]).int()
    edges = torch.diff(padded)
    return (torch.nonzero(edges == -1).flatten() - torch.nonzero(edges == 1).flatten()).tolist()


def test_fixed_spans_are_contiguous_runs_of_whole_spans():
    tokens = Tokens(torch.randn(8, 200, 2), torch.randn(8, 200, 1))
    hidden = hidden_of(SpanMasker(length=4), tokens, 0.3)  # 60 units = 15 spans of 4
    for row in hidden:
        runs = runs_of(row)
        assert sum(runs) == 60 and all(r % 4 == 0 for r in runs) and len(runs) < 15 + 1


def test_geometric_spans_are_longer_than_random_runs():
    tokens = Tokens(torch.randn(16, 400, 2), torch.randn(16, 400, 1))
    hidden = hidden_of(SpanMasker(), tokens, 0.2)
    runs = [r for row in hidden for r in runs_of(row)]
    assert sum(runs) == 16 * 80
    random_runs = [r for row in torch.rand(16, 400).argsort(1).argsort(1) < 80 for r in runs_of(row)]
    assert np.mean(runs) > 3.0 > 1.5 > np.mean(random_runs)


def test_span_lengths_follow_spanbert():
    from unimask.masking.temporal import truncated_geometric

    lengths = truncated_geometric((200_000,), 0.2, 10, torch.Generator().manual_seed(0), "cpu").float()
    assert lengths.min() == 1 and lengths.max() == 10
    assert abs(lengths.mean().item() - 3.78) < 0.03  # SpanBERT: mean 3.8
    assert abs((lengths == 1).float().mean().item() - 0.2 / (1 - 0.8 ** 10)) < 0.005


def test_spans_skip_padding():
    valid = ragged_valid(4, 50, [50, 30, 12, 3])
    hidden = hidden_of(SpanMasker(length=3), Tokens(torch.randn(4, 50, 2), torch.randn(4, 50, 1), valid=valid), 0.5)
    assert hidden.sum(1).tolist() == [25, 15, 6, 2] and not bool((hidden & ~valid).any())


def test_spans_along_time_hide_whole_consecutive_slots():
    hidden = hidden_of(SpanMasker(length=3, axis=0), grid_tokens(6, (24, 2, 2)), 0.5).view(6, 24, 4)
    per_slot = hidden.sum(2)
    assert bool(((per_slot == 0) | (per_slot == 4)).all())
    for row in per_slot == 4:
        runs = runs_of(row)
        assert sum(runs) == 12 and all(r % 3 == 0 for r in runs)


def test_channel_groups_consistent_and_independent():
    tokens = grid_tokens(4, (3, 7, 7), group=GROUPS_3x49)
    consistent = hidden_of(ChannelGroupMasker("consistent"), tokens, 0.75).view(4, 3, 49)
    assert bool((consistent == consistent[:, :1]).all()) and consistent[:, 0].sum(1).tolist() == [37] * 4
    independent = hidden_of(ChannelGroupMasker("independent"), tokens, 0.75).view(4, 3, 49)
    per_group = independent.sum(2)
    assert bool(((per_group - 37).abs() <= 1).all())  # round(0.75 * 49) each, trimmed to round(0.75 * 147)
    assert not bool((independent == independent[:, :1]).all())


def test_channel_groups_need_groups_and_equal_sizes_for_consistent():
    with pytest.raises(ValueError, match="Tokens.group"):
        ChannelGroupMasker()(grid_tokens(1, (4, 4)), 0.5)
    uneven = grid_tokens(1, (4, 4), group=torch.tensor([0] * 10 + [1] * 6))
    with pytest.raises(ValueError, match="equal size"):
        ChannelGroupMasker("consistent")(uneven, 0.5)
    with pytest.raises(ValueError, match="mode"):
        ChannelGroupMasker("sometimes")


def test_channel_group_consistent_reads_place_within_group_not_token_order():
    # groups interleaved token by token: place k of every group is tokens 3k, 3k+1, 3k+2
    tokens = grid_tokens(2, (49, 3), group=torch.arange(3).repeat(49))
    hidden = hidden_of(ChannelGroupMasker("consistent"), tokens, 0.5).view(2, 49, 3)
    assert bool((hidden == hidden[:, :, :1]).all())


def test_gamma_sampler_has_the_right_mean_and_variance():
    generator = torch.Generator().manual_seed(0)
    for concentration in (0.3, 1.0, 4.0):
        sample = sample_gamma(concentration, (100_000,), generator, "cpu")
        assert bool((sample > 0).all())
        assert abs(sample.mean().item() - concentration) < 0.03 * max(1, concentration)
        assert abs(sample.var().item() - concentration) < 0.06 * max(1, concentration)


def test_dirichlet_split_follows_alpha_and_respects_group_sizes():
    groups = torch.arange(4).repeat_interleave(25)
    tokens = grid_tokens(400, (4, 5, 5), group=groups)
    shares = {}
    for alpha in (0.2, 20.0):
        hidden = hidden_of(DirichletMasker(alpha), tokens, 0.8)
        visible = (~hidden).view(400, 4, 25).sum(2).float()  # [B, G] visible per group, 20 in all
        assert bool((visible.sum(1) == 20).all())
        shares[alpha] = visible / 20
        assert (shares[alpha].mean(0) - 0.25).abs().max() < 0.05  # symmetric on average
    assert shares[0.2].std() > 2 * shares[20.0].std()  # small alpha: lopsided splits
    # a group smaller than its share hands the rest to the others; the total stays exact
    small = grid_tokens(300, (1, 42), group=torch.tensor([0] * 2 + [1] * 40))
    hidden = hidden_of(DirichletMasker(1.0), small, 0.5)
    assert bool((hidden.sum(1) == 21).all()) and bool(((~hidden)[:, :2].sum(1) <= 2).all())
    assert ((~hidden)[:, :2].sum(1) == 2).float().mean() > 0.3


def test_dual_masking_copes_with_a_sample_that_hides_nothing():
    from unimask.masking import UniformRatio

    model = tiny_image_model(decoder_masker=RunningCellMasker())
    model.schedule = UniformRatio(0.0, 0.02)  # 16 tokens: round(ratio * 16) = 0 hidden, nothing to decode
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    assert not bool(out.mask.masked.any()) and not bool(out.mask.decode.any())
    assert torch.isfinite(out.loss)
