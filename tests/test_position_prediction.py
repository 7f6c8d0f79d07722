"""PCP-MAE's position prediction (unimask/position_prediction.py): the decoder never reads the
hidden tokens' true positions, the visible latents are the plain MAE's, the loss falls."""
import numpy as np
import pytest
import torch

from helpers import fast_params, read_metrics, run_train
from modalities.points import PointAdapter
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder, encode_ids
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel
from unimask.position_prediction import PositionPredictor, ride_along_masks


def clouds(batch=3, n=256, seed=0):  # [B, n, 3] noisy spheres of different radii
    gen = torch.Generator().manual_seed(seed)
    points = torch.nn.functional.normalize(torch.randn(batch, n, 3, generator=gen), dim=-1)
    return points * torch.linspace(0.5, 1.0, batch)[:, None, None]


def pcp_model(dim=32, pos_every_block=True, **kwargs):
    torch.manual_seed(0)
    adapter = PointAdapter(num_groups=16, group_size=8, dim=dim, pos_dims=(dim, dim))
    encoder = ViTEncoder(dim=dim, depth=2, num_heads=2, pos_every_block=pos_every_block, **kwargs)
    decoder = MAEDecoder(in_dim=dim, dim=dim, depth=1, num_heads=2, pos_every_block=pos_every_block)
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.6), encoder, decoder,
                       position_predictor=PositionPredictor(dim=dim, coord_dim=3))


def test_ride_along_masks_keep_visible_tokens_blind_to_hidden_ones():
    keep_valid = torch.tensor([[True, True, False]])
    hidden_valid = torch.tensor([[True, False]])
    allowed = ride_along_masks(keep_valid, hidden_valid)[0, 0]  # [5, 5]
    expected = torch.tensor([[1, 1, 0, 0, 0],   # visible rows: valid visible keys only
                             [1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],   # a padded visible row still has keys (no NaN)
                             [1, 1, 0, 1, 0],   # hidden rows: every valid key
                             [1, 1, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


@pytest.mark.parametrize("pos_every_block", [True, False])
def test_visible_latents_equal_the_plain_encoders(pos_every_block):
    model = pcp_model(pos_every_block=pos_every_block).eval()
    tokens = model.adapter.tokenize({"points": clouds()})
    mask = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(1))
    latent, _, _ = model.position_predictor(model.adapter, model.encoder, tokens, mask)
    plain = encode_ids(model.adapter, model.encoder, tokens, mask.ids_keep, mask.keep_valid)
    assert latent.shape == (3, 6, 32)  # 16 groups, 60% hidden: 10 hidden, 6 visible
    assert torch.allclose(latent, plain, atol=1e-5)


def test_visible_and_hidden_groups_are_embedded_in_one_batch():
    """As PCP-MAE embeds every group at once: in training, the mini-PointNet's BatchNorm
    normalizes the visible and hidden groups with one set of batch statistics."""
    model = pcp_model().train()
    tokens = model.adapter.tokenize({"points": clouds()})
    mask = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(1))
    rows = []
    hook = model.adapter.group_embed.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    model.position_predictor(model.adapter, model.encoder, tokens, mask)
    hook.remove()
    assert rows == [3 * 16]  # one call over 3 clouds x (6 visible + 10 hidden) groups


def test_decoder_never_reads_the_hidden_true_positions():
    """Moving the hidden tokens' centres changes the position loss, not the reconstruction."""
    model = pcp_model().eval()
    batch = {"points": clouds()}
    tokens = model.adapter.tokenize(batch)
    mask = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(2))
    out = model(batch, mask=mask)
    moved = tokens.coords + 2.0 * mask.masked[..., None]  # hidden centres shifted, patches kept
    model.adapter.tokenize = lambda _: tokens.replace(coords=moved)
    out_moved = model(batch, mask=mask)
    assert torch.allclose(out.pred, out_moved.pred, atol=1e-5)
    assert out_moved.terms["position"] > out.terms["position"] + 1.0
    # what the plain Point-MAE decoder does with the same move: its reconstruction changes
    model.position_predictor = None
    assert not torch.allclose(model(batch, mask=mask).pred, out_moved.pred, atol=1e-3)


def test_training_lowers_both_losses_and_the_position_term_is_weighted():
    model = pcp_model()
    batch = {"points": clouds(4)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    recon, position = [], []
    for step in range(30):
        out = model(batch, generator=torch.Generator().manual_seed(step % 2))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        recon.append(float(out.terms["recon"]))
        position.append(float(out.terms["position"]))
        assert torch.isclose(out.loss, out.terms["recon"] + 0.1 * out.terms["position"])
    assert np.mean(recon[-3:]) < 0.5 * np.mean(recon[:3]), recon
    assert np.mean(position[-3:]) < 0.5 * np.mean(position[:3]), position
    assert model.position_predictor.mask_pos_token.grad is not None


def test_errors_name_the_parameter():
    adapter = PointAdapter(num_groups=16, group_size=8, dim=32, pos_dims=(32, 32))
    parts = (RandomMasker(), ConstantRatio(0.6), ViTEncoder(dim=32, depth=1, num_heads=2),
             MAEDecoder(in_dim=32, dim=32, depth=1, num_heads=2))
    with pytest.raises(ValueError, match="position_predictor needs mode='drop'"):
        MaskedModel(adapter, *parts, mode="replace", position_predictor=PositionPredictor(dim=32, coord_dim=3))
    model = MaskedModel(adapter, *parts, position_predictor=PositionPredictor(dim=32, coord_dim=2))
    with pytest.raises(ValueError, match="coord_dim=2"):
        model({"points": clouds()})
    with pytest.raises(ValueError, match="transformer blocks and per-block attention masks"):
        MaskedModel(adapter, parts[0], parts[1], torch.nn.Linear(32, 32), parts[3],
                    position_predictor=PositionPredictor(dim=32, coord_dim=3))
    rotary = pcp_model(rope=True)
    with pytest.raises(ValueError, match="rope=True"):
        rotary({"points": clouds()})


def test_pcp_recipe_trains_under_smoke_and_logs_both_terms(tmp_path):
    workdir = str(tmp_path / "pcp")
    args = ["--gin", "gin/pcp_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", workdir]
    assert run_train(args + fast_params("train.steps=20", "train.eval_every=20")) == 0
    rows = [row for row in read_metrics(workdir) if "loss" in row]
    assert rows[-1]["step"] == 20 and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert {"loss_recon", "loss_position"} <= set(rows[-1])


def test_a_pcp_checkpoint_fine_tunes_and_a_plain_one_starts_a_pcp_run(tmp_path):
    """The centre head is pretraining-only: a classifier drops it, a PCP model starts it fresh
    from a plain Point-MAE file."""
    from unimask.models.classifier import Classifier
    from unimask.weights.load import load_pretrained

    path = str(tmp_path / "pcp.pt")
    torch.save({"model": pcp_model().state_dict()}, path)
    adapter = PointAdapter(num_groups=16, group_size=8, dim=32, pos_dims=(32, 32))
    classifier = Classifier(adapter, ViTEncoder(dim=32, depth=2, num_heads=2, pos_every_block=True), num_classes=3,
                            layer_decay=None)
    report = load_pretrained(classifier, path, verbose=False)
    assert any(key.startswith("position_predictor.") for key in report.dropped) and not report.missing
    plain = str(tmp_path / "plain.pt")
    model = pcp_model()
    model.position_predictor = None
    torch.save({"model": model.state_dict()}, plain)
    report = load_pretrained(pcp_model(), plain, verbose=False)
    assert any(key.startswith("position_predictor.") for key in report.new) and not report.missing
