"""Cross-modal pretraining: one encoder over several adapters (MultiMAE, OmniMAE, CAV-MAE)."""
import os

import pytest
import torch

from helpers import SMOKE, fast_params, read_metrics, run_train
from modalities.image import ImageAdapter
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder
from unimask.masking import ConstantRatio, DirichletMasker, RandomMasker
from unimask.masking.base import count_hidden
from unimask.models.multimodal import MultiModalModel
from unimask.targets import PixelTarget


def two_view_model(masker=None, schedule=None, dim=32):
    adapters = {"image": ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=dim),
                "edges": ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=dim)}
    decoders = {name: MAEDecoder(in_dim=dim, dim=dim, depth=1, num_heads=2) for name in adapters}
    return MultiModalModel(adapters, ViTEncoder(dim=dim, depth=2, num_heads=2), decoders,
                           masker or DirichletMasker(alpha=1.0), schedule or ConstantRatio(0.75),
                           targets=PixelTarget(norm_pix=False))


def batch_of(size=6, seed=0, present=None):
    gen = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(size, 1, 16, 16, generator=gen), "edges": torch.randn(size, 1, 16, 16, generator=gen)}
    if present is not None:
        batch["present"] = present
    return batch


def test_the_visible_budget_is_exact_across_modalities():
    model = two_view_model(schedule=ConstantRatio(0.7))
    tokens = model.tokenize(batch_of(8))
    mask = model.make_mask(tokens, 0.0, torch.Generator().manual_seed(1))
    visible = sum(m.keep_valid.sum(1) for m in mask.values())  # [B] over both modalities
    assert visible.tolist() == [32 - int(count_hidden(torch.tensor([0.7]), 32))] * 8  # 32 tokens, 10 visible
    splits = torch.stack([mask[n].keep_valid.sum(1) for n in ("edges", "image")], 1)
    assert len({tuple(row) for row in splits.tolist()}) > 1  # Dirichlet shares differ per sample


def test_a_missing_modality_gives_no_encoder_tokens_and_no_loss():
    present = {"image": torch.ones(4, dtype=torch.bool), "edges": torch.tensor([True, False, True, False])}
    model = two_view_model()
    seen = {}
    encoder_forward = model.encoder.forward
    model.encoder.forward = lambda x, key_valid, *a, **k: (seen.update(valid=key_valid), encoder_forward(x, key_valid, *a, **k))[1]
    out = model(batch_of(4, present=present), generator=torch.Generator().manual_seed(0))
    edges = out.mask["edges"]
    assert not edges.keep_valid[[1, 3]].any() and not edges.masked[[1, 3]].any()
    visible = out.mask["image"].keep_valid.sum(1) + edges.keep_valid.sum(1)
    assert visible.tolist() == [8, 4, 8, 4]  # 25% of the real tokens: 32, or 16 without the edges
    k_edges = edges.ids_keep.shape[1]
    assert not seen["valid"][[1, 3], :k_edges].any()  # edges come first (sorted names); none for those samples
    absent = {"image": torch.ones(4, dtype=torch.bool), "edges": torch.zeros(4, dtype=torch.bool)}
    out = model(batch_of(4, present=absent), generator=torch.Generator().manual_seed(0))
    assert float(out.terms["edges"]) == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()  # and the graph still runs


def test_the_encoder_sees_the_modalities_in_sorted_order():
    model = two_view_model(masker={"image": RandomMasker(), "edges": RandomMasker()},
                           schedule={"image": ConstantRatio(0.5), "edges": ConstantRatio(0.5)}).eval()
    captured = {}
    model.encoder.forward = lambda x, *a, **k: (captured.update(x=x), x)[1]
    batch = batch_of(2)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    tokens, mask = out.tokens, out.mask
    pieces = []
    for name in ("edges", "image"):  # sorted, whatever the dict order
        from unimask.encoders import embed_ids, position_codes

        x = embed_ids(model.adapters[name], tokens[name], mask[name].ids_keep)
        pieces.append(x + position_codes(model.adapters[name], tokens[name], mask[name].ids_keep, x)
                      + model.modality_embed[name])
    torch.testing.assert_close(captured["x"], torch.cat(pieces, 1))


def test_features_per_modality_are_each_modalitys_mean_side_by_side():
    model = two_view_model().eval()
    present = {"image": torch.ones(3, dtype=torch.bool), "edges": torch.tensor([True, False, True])}
    batch = batch_of(3, present=present)
    with torch.no_grad():
        tokens, valid = model.features(batch)  # [3, 32, D]: edges' 16 tokens first, then the image's
        model.features_per_modality = True
        rows, present_rows = model.features(batch)
    assert rows.shape == (3, 2, 32) and present_rows.tolist() == [[True, True], [False, True], [True, True]]
    torch.testing.assert_close(rows[:, 1], tokens[:, 16:].mean(1))  # the image's own tokens only
    torch.testing.assert_close(rows[[0, 2], 0], tokens[[0, 2], :16].mean(1))
    assert not valid[1, :16].any() and torch.equal(rows[1, 0], torch.zeros(32))  # missing edges: an empty row


def test_learned_maskers_and_edge_encoders_are_refused():
    from unimask.gnn import GNNEncoder
    from unimask.masking import AdaptiveMasker

    with pytest.raises(ValueError, match="learned maskers"):
        two_view_model(masker=AdaptiveMasker(dim=32))
    adapters = {"a": ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=16)}
    with pytest.raises(ValueError, match="encoder over a set of tokens"):
        MultiModalModel(adapters, GNNEncoder(dim=16), MAEDecoder(in_dim=16, dim=16, depth=1), RandomMasker(),
                        ConstantRatio(0.5))


RECIPES = {"multimae": ("image", "edges"), "omnimae": ("image", "video"), "av_mae": ("audio", "video"),
           "av_digits_mae": ("audio", "image")}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_cross_modal_recipe_trains_with_falling_loss_per_modality(tmp_path, recipe):
    workdir = str(tmp_path / recipe)
    assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.num_workers=1")]) == 0
    rows = read_metrics(workdir)
    for name in RECIPES[recipe]:
        evals = [r[f"eval_loss_{name}"] for r in rows if f"eval_loss_{name}" in r]
        assert len(evals) == 3 and evals[-1] < evals[0], (name, evals)
        assert all(f"loss_{name}" in r for r in rows)
    assert any(f.startswith("step_30_") for f in os.listdir(os.path.join(workdir, "recon")))


@pytest.mark.slow  # ~2 min on 2 cores (a cross-modal run, then three probes): .ci/run runs it after README's command
def test_cross_modal_figure_and_per_modality_probes(tmp_path, capsys):
    import eval as evaluator
    import visualize

    workdir = str(tmp_path / "avd")
    assert run_train(["--gin", "gin/av_digits_mae.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=3", "IMG_SIZE=28", "PATCH=4", "AUDIO_FRAMES=96", "MEL_BINS=128",
                                   "AUDIO_PATCH=16", "CLIP_SECONDS=0.96")]) == 0
    checkpoint = os.path.join(workdir, "checkpoints", "last.pt")
    out = str(tmp_path / "image_from_audio.png")
    assert visualize.main(["cross", "--checkpoint", checkpoint, "--source", "audio", "--target", "image",
                           "--out", out]) == 0
    assert os.path.isfile(out) and "predicted from 'audio' alone" in capsys.readouterr().out
    dims = {}
    for modality in ("image", "audio", "all"):
        result = evaluator.evaluate(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "5",
                                     "--modality", modality])
        assert result["n_test"] == 1000 and 0 <= result["top1_acc"] <= 100  # the digits image test split drives
        dims[modality] = result["dim"]
    assert dims["all"] == 2 * dims["image"] == 2 * dims["audio"]  # 'all': each modality's mean, side by side
    raw = evaluator.evaluate(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "5", "--modality", "image",
                              "--features", "raw"])  # the no-learning baseline of one modality
    assert raw["n_test"] == 1000 and raw["dim"] > dims["image"]  # 49 tokens x (16 pixels + coords), flattened
    with pytest.raises(ValueError, match="modalities are"):
        evaluator.evaluate(["--checkpoint", checkpoint, "--modality", "smell"])
