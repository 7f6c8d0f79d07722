"""Rotary positions (unimask/rope.py through ViTEncoder.rope): attention sees relative positions."""
from __future__ import annotations

import torch

from helpers import SMOKE, fast_params, read_metrics, run_train
from unimask.encoders import ViTEncoder
from unimask.rope import rope_angles, rotate
from unimask.tokens import Tokens
from unimask.transformer import RowBlock


def tokens_at(coords: torch.Tensor) -> tuple:
    """Tokens with the given coords [B, K, d] (patches unused by the encoder) and all ids."""
    batch, k, _ = coords.shape
    tokens = Tokens(torch.zeros(batch, k, 1), coords)
    return tokens, torch.arange(k).expand(batch, -1)


def test_rotation_keeps_norms_and_scores_depend_on_offsets_only():
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    coords = torch.arange(5.0).view(1, 5, 1)
    cos, sin = rope_angles(coords, 16)
    torch.testing.assert_close(rotate(q, cos, sin, 1).norm(dim=-1), q.norm(dim=-1))
    scores = rotate(q, cos, sin, 1) @ rotate(k, cos, sin, 1).transpose(-1, -2)
    cos2, sin2 = rope_angles(coords + 7, 16)
    shifted = rotate(q, cos2, sin2, 1) @ rotate(k, cos2, sin2, 1).transpose(-1, -2)
    torch.testing.assert_close(scores, shifted, rtol=1e-4, atol=1e-4)


def test_rope_encoder_is_translation_invariant_and_position_aware():
    torch.manual_seed(0)
    encoder = ViTEncoder(dim=32, depth=2, num_heads=2, rope=True).eval()
    x = torch.randn(2, 6, 32)
    for axes in (1, 2):
        coords = torch.randint(0, 8, (2, 6, axes)).float()
        tokens, ids = tokens_at(coords)
        out = encoder(x, None, tokens, ids)
        moved, _ = tokens_at(coords + 3)
        torch.testing.assert_close(encoder(x, None, moved, ids), out, rtol=1e-4, atol=1e-4)  # relative only
        swapped, _ = tokens_at(coords.flip(1))
        assert not torch.allclose(encoder(x, None, swapped, ids), out, atol=1e-3)  # order matters
    plain = ViTEncoder(dim=32, depth=2, num_heads=2).eval()
    plain.load_state_dict(encoder.state_dict())
    assert not torch.allclose(plain(x), encoder(x, None, *tokens_at(torch.arange(6.0).view(1, 6, 1).expand(2, -1, -1))))


def test_rope_rows_path_matches_the_full_block():
    torch.manual_seed(0)
    block = RowBlock(32, 2, qkv_bias=True).eval()
    x = torch.randn(2, 7, 32)
    cos, sin = rope_angles(torch.randint(0, 9, (2, 7, 1)).float(), 16)
    rows = torch.tensor([[0, 3, 6], [1, 2, 5]])
    full = block(x, rope=(cos, sin, 1))
    some = block(x, out_rows=rows, rope=(cos, sin, 1))
    torch.testing.assert_close(some, torch.gather(full, 1, rows[..., None].expand(-1, -1, 32)), rtol=1e-5, atol=1e-5)


def test_text_recipe_trains_with_rotary_positions(tmp_path):
    workdir = str(tmp_path / "run")
    assert run_train(["--gin", "gin/text_mlm_cpu.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("TextAdapter.pos='rotary'", "ViTEncoder.rope=True")]) == 0
    evals = [r["eval_loss"] for r in read_metrics(workdir) if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0], evals
