"""Prediction targets beyond pixels: HOG (MaskFeat), frequency bands (MFM), teachers (data2vec,
MaskDistill) and VQ codes (BEiT v2-style)."""
import os

import numpy as np
import pytest
import torch

from helpers import SMOKE, fast_params, read_metrics, run_train, tiny_image_model
from modalities.image import ImageAdapter
from unimask.masking import FrequencyMasker
from unimask.optim import param_groups
from unimask.patches import tokens_to_array
from unimask.quantize import VectorQuantizer
from unimask.targets import EMATeacherTarget, HOGTarget, TeacherTarget
from unimask.targets.hog import hog_cells
from unimask.targets.teachers import normalize_layer
from unimask.tokens import INPUT_PATCHES


def test_hog_matches_scikit_image():
    from skimage.feature import hog

    image = np.random.default_rng(0).random((32, 40))
    ours = hog_cells(torch.tensor(image)[None, None], bins=9, cell=8, gradient="central")[0, 0]  # [9, 4, 5]
    theirs = hog(image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2",
                 feature_vector=False)[:, :, 0, 0, :]  # [4, 5, 9]
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), theirs, atol=1e-6)


def test_hog_target_layout_per_patch_and_per_frame():
    images = torch.randn(2, 3, 32, 32)
    adapter = ImageAdapter(img_size=32, patch_size=16, in_chans=3, dim=8)
    tokens = adapter.tokenize({"image": images})
    values, _ = HOGTarget()(tokens, adapter)
    assert values.shape == (2, 4, 108) == (2, 4, HOGTarget().dim(adapter))  # 3 channels x 9 bins x 2 x 2 cells
    cells = hog_cells(images, 9, 8)  # [2, 3, 9, 4, 4]
    torch.testing.assert_close(values[0, 1].view(2, 2, 27)[0, 0], cells[0, :, :, 0, 2].reshape(27))  # patch (0, 1)
    from modalities.video import VideoAdapter

    video = VideoAdapter(num_frames=4, img_size=16, patch_size=16, tubelet_size=2, dim=8)
    clip = video.tokenize({"video": torch.randn(1, 3, 4, 16, 16)})
    assert HOGTarget()(clip, video)[0].shape == (1, 2, 2 * 4 * 3 * 9) and HOGTarget().dim(video) == 216
    with pytest.raises(ValueError, match="cell_size=8 does not divide"):
        HOGTarget().dim(ImageAdapter(img_size=28, patch_size=4, in_chans=1, dim=8))


@pytest.mark.parametrize("mode", ["low_pass", "high_pass", "band"])
def test_frequency_masker_keeps_exactly_the_intended_frequencies(mode):
    adapter = ImageAdapter(img_size=32, patch_size=4, in_chans=1, dim=8)
    tokens = adapter.tokenize({"image": torch.randn(2, 1, 32, 32)})
    masker = FrequencyMasker(mode=mode, radius=5.0, outer_radius=10.0)
    mask = masker(tokens, 0.5, torch.Generator().manual_seed(0))
    keep = mask.aux["frequency_keep"]  # [B, H, W]
    spectrum = torch.fft.fftshift(torch.fft.fft2(tokens_to_array(tokens)), dim=(-2, -1))
    filtered = tokens.replace(patches=mask.aux[INPUT_PATCHES])
    kept = torch.fft.fftshift(torch.fft.fft2(tokens_to_array(filtered)), dim=(-2, -1))
    keep_c = keep[:, None].expand_as(spectrum)
    assert kept[~keep_c].abs().max() < 1e-3  # removed: gone
    torch.testing.assert_close(kept[keep_c], spectrum[keep_c], atol=1e-3, rtol=1e-4)  # kept: untouched
    assert mask.masked.all() and mask.ratio.tolist() == pytest.approx((1 - keep.flatten(1).float().mean(1)).tolist())
    r = torch.sqrt((torch.arange(32.0) - 16)[:, None] ** 2 + (torch.arange(32.0) - 16)[None] ** 2)
    expected = {"low_pass": r < 5, "high_pass": r >= 5, "band": ~((r >= 5) & (r < 10))}[mode]
    assert torch.equal(keep[0], expected)


def test_teacher_layers_average_with_instance_norm():
    h = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    normed = normalize_layer(h, "instance", valid)
    real = normed[1, :3]
    raw_var = h[1, :3].var(0, unbiased=False)  # over the 3 real tokens only; eps 1e-5 keeps the result below 1
    assert real.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(real.var(0, unbiased=False), raw_var / (raw_var + 1e-5), atol=1e-5, rtol=1e-4)


def test_ema_teacher_top_k_layers_and_linear_momentum():
    target = EMATeacherTarget(latent_dim=32, top_k_layers=2, layer_norm="layer", normalize=True, momentum=0.9,
                              end_momentum=1.0, momentum_curve="linear")
    model = tiny_image_model(target=target)
    tokens = model.adapter.tokenize({"image": torch.randn(2, 3, 16, 16)})
    values, _ = target(tokens, model.adapter)
    from unimask.encoders import encode_layers

    ids = torch.arange(16).expand(2, -1)
    layers = encode_layers(target.teacher_adapter, target.teacher_encoder, tokens, ids, tokens.valid_mask())
    expected = torch.stack([torch.nn.functional.layer_norm(x, (32,)) for x in layers]).mean(0)
    torch.testing.assert_close(values, torch.nn.functional.layer_norm(expected, (32,)))
    assert target.momentum_at(0.5) == pytest.approx(0.95)


def test_frozen_teacher_gets_no_gradient_and_never_changes(tmp_path):
    teacher_run = str(tmp_path / "teacher")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", teacher_run,
                      *fast_params("train.steps=2")]) == 0
    checkpoint = os.path.join(teacher_run, "checkpoints", "last.pt")
    target = TeacherTarget(ImageAdapter(img_size=32, patch_size=8, in_chans=1, dim=64),
                           __import__("unimask.encoders", fromlist=["ViTEncoder"]).ViTEncoder(dim=64, depth=2, num_heads=2),
                           checkpoint)
    model = tiny_image_model(target=target, img_size=32, patch=8, chans=1, dim=64)
    saved = torch.load(checkpoint, weights_only=False)["model"]
    for name, value in target.teacher_encoder.state_dict().items():  # building the student leaves it alone
        assert torch.equal(value, saved[f"encoder.{name}"]), name
    optimized = {id(p) for group in param_groups(model, 0.05) for p in group["params"]}
    assert not optimized & {id(p) for p in target.parameters()} and not any(p.requires_grad for p in target.parameters())
    batch = {"image": torch.randn(4, 1, 32, 32)}
    tokens = model.adapter.tokenize(batch)
    before = target(tokens, model.adapter)[0].clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        out = model(batch, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.after_step(step / 3)
    assert all(p.grad is None for p in target.parameters())
    assert torch.equal(target(tokens, model.adapter)[0], before)
    from unimask.encoders import ViTEncoder
    from unimask.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="teacher"):  # a teacher of another size is named
        TeacherTarget(ImageAdapter(img_size=32, patch_size=8, in_chans=1, dim=32), ViTEncoder(dim=32, depth=2,
                                                                                            num_heads=2), checkpoint)


def test_vector_quantizer_learns_and_codes_are_deterministic():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes=16, code_dim=4)
    centres = torch.nn.functional.normalize(torch.randn(16, 4), dim=1)
    data = centres[torch.randint(16, (64, 8))] + 0.01 * torch.randn(64, 8, 4)  # [B, N, D] around 16 points
    valid = torch.ones(64, 8, dtype=torch.bool)
    for _ in range(30):
        out = quantizer(data, valid)
    quantizer.eval()
    codes = quantizer(data, valid)["codes"]
    assert torch.equal(codes, quantizer(data, valid)["codes"])  # the same vectors, the same codes
    assert float(out["perplexity"]) > 10  # most of the 16 codes in use, not a collapse onto a few


RECIPES = ["maskfeat", "maskfeat_cpu", "mfm", "mfm_cpu", "data2vec_image", "data2vec_image_cpu", "vq_tokenizer"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_target_recipes_train_under_smoke_with_falling_loss(tmp_path, recipe):
    workdir = str(tmp_path / recipe)
    assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir, *fast_params()]) == 0
    evals = [r["eval_loss"] for r in read_metrics(workdir) if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0], evals


def test_distill_and_beit_recipes_train_from_their_checkpoints(tmp_path):
    teacher, tokenizer = str(tmp_path / "teacher"), str(tmp_path / "tokenizer")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", teacher, *fast_params()]) == 0
    assert run_train(["--gin", "gin/vq_tokenizer.gin", "--gin", SMOKE, "--workdir", tokenizer, *fast_params()]) == 0
    runs = {"distill_mae": [f"TeacherTarget.checkpoint='{teacher}/checkpoints/last.pt'", "TEACHER_DIM=64",
                            "TEACHER_DEPTH=2", "TEACHER_HEADS=2"],
            "beit_v2_tiny": [f"TokenTarget.checkpoint='{tokenizer}/checkpoints/last.pt'"]}
    for recipe, params in runs.items():
        workdir = str(tmp_path / recipe)
        assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir,
                          *fast_params(*params)]) == 0
        evals = [r["eval_loss"] for r in read_metrics(workdir) if "eval_loss" in r]
        assert evals[-1] < evals[0], (recipe, evals)


def test_shipped_tokenizer_loads_into_the_beit_recipe_and_uses_its_codebook():
    """data/sample/tokenizers/fashion_vq512.pt is what gin/beit_v2_tiny.gin reads on a fresh clone:
    it loads strictly at the recipe's size and spreads the sample images over many codes."""
    import gin
    from unimask.cli import parse_gin

    from modalities.image import ImageDataset

    parse_gin(["gin/beit_v2_tiny.gin"], ["train.num_workers=0"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()  # loads the file strictly
    shipped = torch.load("data/sample/tokenizers/fashion_vq512.pt", weights_only=False)["model"]
    for name, value in model.target.tokenizer.state_dict().items():  # the model's init leaves them alone
        assert torch.equal(value, shipped[name].to(value.dtype)), name
    data = ImageDataset(root="data/sample/images/fashion_mnist.npz", img_size=28, augment=False)
    batch = torch.utils.data.default_collate([data[i] for i in range(64)])
    codes, _ = model.target(model.adapter.tokenize(batch), model.adapter)  # [64, 49, 1]
    assert codes.shape == (64, 49, 1)
    assert len(torch.unique(codes)) > 100, len(torch.unique(codes))  # of 512; a random tokenizer collapses


def test_integer_targets_are_not_rounded_to_the_prediction_dtype():
    """Under bf16 autocast the predictions are bf16; token ids above 256 must not be cast with
    them (bf16 rounds 511 to 512 and every odd id above 256 to an even one: silently wrong)."""
    from unimask.interfaces import Target
    from unimask.losses import CELoss
    from unimask.models.masked import Decoded, score_decoded

    class Ids(Target):
        def select(self, tokens, adapter, ids):
            return torch.tensor([[[511], [257]]]), None

    pred = torch.full((1, 2, 512), -10.0, dtype=torch.bfloat16)
    pred[0, 0, 511] = pred[0, 1, 257] = 10.0
    decoded = Decoded(pred, ids=torch.tensor([[0, 1]]), valid=torch.ones(1, 2, dtype=torch.bool))
    loss, _ = score_decoded(None, Ids(), CELoss(), decoded, None)
    assert float(loss) < 1e-3
