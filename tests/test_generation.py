"""Masked generation's core pieces: the masker switch that lets every token be hidden, the
MaskGIT and MAGE ratio schedules, and the iterative-unmasking sampler shared by every discrete
modality (text today, image and audio codes next)."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import overfit, tiny_image_model
from unimask.generation import hidden_share, iterative_unmask
from unimask.masking import ConstantRatio, MaskGITCosineRatio, RandomMasker, TruncatedNormalRatio
from unimask.tokens import Tokens


def fixed_logits(batch=3, length=20, vocab=7, seed=0):
    """A predict() that ignores its input: fixed random logits, recording the hidden count it saw."""
    logits = torch.randn(batch, length, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    seen = []

    def predict(ids, hidden):
        seen.append(hidden.sum(1).tolist())
        return logits

    return predict, logits, seen


def start(batch=3, length=20):
    return torch.full((batch, length), -1), torch.ones(batch, length, dtype=torch.bool)


def test_hidden_share_runs_from_one_to_zero_on_both_schedules():
    assert [hidden_share(i, 4, "linear") for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cosine = [hidden_share(i, 4, "cosine") for i in range(5)]
    assert cosine[0] == 1.0 and abs(cosine[-1]) < 1e-12
    assert cosine[2] == pytest.approx(math.cos(math.pi / 4))  # MaskGIT's mask ratio at half the steps


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_confidence_order_keeps_exactly_the_schedule_count_and_the_most_probable(schedule):
    predict, logits, seen = fixed_logits()
    ids, hidden = start()
    out = iterative_unmask(predict, ids, hidden, steps=5, order="confidence", schedule=schedule, temperature=0)
    expected = [[round(20 * hidden_share(step, 5, schedule))] * 3 for step in range(5)]
    assert seen == expected  # before each step, exactly round(n * share) places were still hidden
    assert torch.equal(out, logits.argmax(-1))  # greedy draws everywhere, and every place decided
    # the first step kept the places whose greedy token is most probable
    predict, logits, seen = fixed_logits()
    one = iterative_unmask(predict, *start(), steps=1, order="confidence", temperature=0)
    assert torch.equal(one, logits.argmax(-1))


def test_confidence_choice_follows_probability_then_gumbel_noise_changes_it():
    predict, logits, _ = fixed_logits(batch=1, length=10)
    first_kept = []

    def recording(ids, hidden):
        first_kept.append(hidden.clone())
        return logits

    iterative_unmask(recording, *start(1, 10), steps=2, order="confidence", temperature=0)
    kept = ~first_kept[1][0]  # decided in step 1: 5 of 10 (linear share 0.5)
    top = logits.softmax(-1).max(-1).values[0]
    assert int(kept.sum()) == 5 and set(torch.topk(top, 5).indices.tolist()) == set(kept.nonzero()[:, 0].tolist())
    predict, _, _ = fixed_logits()
    noisy = [iterative_unmask(predict, *start(3, 20), steps=4, order="confidence", choice_temperature=4.5,
                              generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])  # seeded, and noise matters


def test_random_order_decides_every_place_and_is_seeded():
    predict, _, seen = fixed_logits()
    runs = [iterative_unmask(predict, *start(), steps=6, order="random", generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and bool((runs[0] >= 0).all())
    counts = [sum(step) for step in seen[:6]]
    assert counts[0] == 60 and counts == sorted(counts, reverse=True)


def test_bad_sampler_settings_name_the_setting():
    predict, _, _ = fixed_logits()
    for kwargs, word in (({"order": "best"}, "order"), ({"schedule": "exp"}, "schedule"), ({"steps": 0}, "steps"),
                         ({"choice_temperature": -1.0}, "choice_temperature")):
        with pytest.raises(ValueError, match=word):
            iterative_unmask(predict, *start(), **{"steps": 3, **kwargs})


def tokens_of(batch=4, n=10):
    return Tokens(patches=torch.zeros(batch, n, 1), coords=torch.zeros(batch, n, 1))


def test_maskers_keep_one_visible_unless_generation_allows_every_token_hidden():
    tokens = tokens_of()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        RandomMasker()(tokens, 1.0)
    assert RandomMasker()(tokens, 0.99).masked.sum(1).tolist() == [9] * 4  # round(9.9) = 10, one kept visible
    allowed = RandomMasker(allow_all_hidden=True)
    assert allowed(tokens, 1.0).masked.sum(1).tolist() == [10] * 4
    assert allowed(tokens, torch.tensor([1.0, 0.5, 0.0, 0.95], dtype=torch.float64)).masked.sum(1).tolist() == [10, 5, 0, 10]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        allowed(tokens, 1.5)


def test_all_hidden_needs_a_model_that_sees_hidden_tokens():
    with pytest.raises(ValueError, match="allow_all_hidden.*replace"):
        tiny_image_model(mode="drop", masker=RandomMasker(allow_all_hidden=True))
    model = tiny_image_model(mode="replace", masker=RandomMasker(allow_all_hidden=True))
    model.schedule = MaskGITCosineRatio()
    out = model({"image": torch.rand(8, 3, 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    fully = model({"image": torch.rand(2, 3, 16, 16)}, mask=RandomMasker(allow_all_hidden=True)(
        model.adapter.tokenize({"image": torch.rand(2, 3, 16, 16)}), 1.0))
    assert torch.isfinite(fully.loss) and bool(fully.mask.masked.all())


def test_maskgit_and_mage_ratio_schedules_follow_their_distributions():
    g = torch.Generator().manual_seed(0)
    cosine = MaskGITCosineRatio()(0.3, 200_000, g)
    assert cosine.dtype == torch.float64 and float(cosine.min()) > 0 and float(cosine.max()) <= 1.0
    assert float(cosine.mean()) == pytest.approx(2 / math.pi, abs=3e-3)  # E[cos(pi r / 2)], r ~ U(0, 1)
    assert float((cosine > math.cos(math.pi / 4)).double().mean()) == pytest.approx(0.5, abs=3e-3)
    mage = TruncatedNormalRatio()(0.0, 200_000, g)
    assert float(mage.min()) >= 0.5 and float(mage.max()) <= 1.0
    a, b = (0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25  # the truncated Gaussian's mean, analytically
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    assert float(mage.mean()) == pytest.approx(0.55 + 0.25 * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a)), abs=2e-3)
    again = TruncatedNormalRatio()(0.0, 5, torch.Generator().manual_seed(7))
    assert torch.equal(again, TruncatedNormalRatio()(0.0, 5, torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="TruncatedNormalRatio.high"):
        TruncatedNormalRatio(high=1.2)
    assert float(ConstantRatio(0.5)(0, 1)[0]) == 0.5


# ---- codes as tokens: CodesAdapter, MaskGIT training, sampling, the CLI -----------------------------
def tiny_codes_adapter(num_classes=3, num_codes=16, dim=32, label_dropout=0.0):
    from modalities.codes import CodesAdapter
    from modalities.image import ImageAdapter
    from unimask.decoders import MAEDecoder
    from unimask.models.vq import VQTokenizer
    from unimask.targets import PixelTarget
    from unimask.encoders import ViTEncoder

    torch.manual_seed(0)
    tokenizer = VQTokenizer(ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=24),
                            ViTEncoder(dim=24, depth=1, num_heads=2), MAEDecoder(in_dim=8, dim=24, depth=1, num_heads=2),
                            num_codes=num_codes, code_dim=8, target=PixelTarget(norm_pix=False))
    return CodesAdapter(tokenizer, checkpoint=None, dim=dim, num_classes=num_classes, label_dropout=label_dropout)


def maskgit_model(adapter):
    from unimask.decoders import MAEDecoder
    from unimask.models.masked import MaskedModel
    from unimask.losses import CELoss
    from unimask.encoders import ViTEncoder

    return MaskedModel(adapter, RandomMasker(allow_all_hidden=True), MaskGITCosineRatio(),
                       ViTEncoder(dim=adapter.dim, depth=2, num_heads=2),
                       MAEDecoder(in_dim=adapter.dim, dim=adapter.dim, depth=0, remask=False, use_pos=False),
                       loss=CELoss(label_smoothing=0.1), mode="replace")


def test_codes_adapter_puts_a_never_hidden_class_token_before_the_tokenizer_codes():
    adapter = tiny_codes_adapter()
    images, labels = torch.rand(5, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    tokens = adapter.tokenize({"image": images, "label": labels})
    codes = adapter.tokenizer.codes(adapter.inner_tokens({"image": images}))  # [5, 16]
    assert tokens.patches.shape == (5, 17, 1) and tokens.patches.dtype == torch.long
    assert torch.equal(tokens.patches[:, 0, 0], 16 + labels) and torch.equal(tokens.patches[:, 1:, 0], codes)
    assert not bool(tokens.maskable_mask()[:, 0].any()) and bool(tokens.maskable_mask()[:, 1:].all())
    again = adapter.tokenize({"codes": codes, "label": labels})  # the sampler's input: codes, no picture
    assert torch.equal(again.patches, tokens.patches) and torch.equal(again.coords, tokens.coords)
    mask = RandomMasker(allow_all_hidden=True)(tokens, 1.0)
    assert mask.masked.sum(1).tolist() == [16] * 5  # every code hidden, the class token never
    plain = tiny_codes_adapter(num_classes=0).tokenize({"image": images})
    assert plain.grid == (4, 4) and plain.patches.shape == (5, 16, 1)
    with pytest.raises(ValueError, match="label"):
        adapter.tokenize({"image": images, "label": torch.tensor([0, 1, 2, 3, 0])})
    # codes decode through the tokenizer's decoder to its input's shape, as its own forward does
    tokenizer = adapter.tokenizer.eval()
    inner = adapter.inner_tokens({"image": images})
    assert adapter.decode(codes).shape == (5, 1, 16, 16)
    torch.testing.assert_close(tokenizer.decode_codes(codes, inner), tokenizer({"image": images}).pred)


def test_label_dropout_and_no_class_feed_classifier_free_guidance():
    from modalities.codes import sample_codes

    adapter = tiny_codes_adapter(label_dropout=0.25)
    labels = torch.arange(4000) % 3
    torch.manual_seed(0)
    ids = adapter.class_ids(labels, "cpu")  # training mode: a quarter become "no class"
    null = 16 + 3
    assert 0.22 < float((ids == null).double().mean()) < 0.28
    kept = ids != null
    assert torch.equal(ids[kept], 16 + labels[kept])
    torch.manual_seed(0)
    assert torch.equal(adapter.class_ids(labels, "cpu"), ids)  # from torch's generator: the trainer seeds it per step
    adapter.eval()
    assert torch.equal(adapter.class_ids(torch.tensor([2, -1, 0]), "cpu"), torch.tensor([18, null, 16]))
    adapter.train()
    with pytest.raises(ValueError, match="without any label"):
        adapter.class_ids(torch.full((4,), -1), "cpu")
    with pytest.raises(ValueError, match="label_dropout"):
        tiny_codes_adapter(num_classes=0, label_dropout=0.1)
    model = maskgit_model(adapter)
    picked = torch.tensor([0, 1, 2, 1])
    guided = sample_codes(model, 4, picked, steps=3, seed=1, cfg=2.0)
    assert guided.shape == (4, 16) and torch.equal(guided, sample_codes(model, 4, picked, steps=3, seed=1, cfg=2.0))
    assert not torch.equal(guided, sample_codes(model, 4, picked, steps=3, seed=1))
    with pytest.raises(ValueError, match="class-conditional"):
        sample_codes(maskgit_model(tiny_codes_adapter(num_classes=0)), 2, None, cfg=1.0)


def test_maskgit_training_lowers_the_code_loss_and_sampling_is_seeded():
    from modalities.codes import sample_codes

    adapter = tiny_codes_adapter()
    model = maskgit_model(adapter)
    batch = {"image": torch.rand(16, 1, 16, 16), "label": torch.arange(16) % 3}
    losses, _ = overfit(model, batch, 50, lr=3e-3, seeds=3, params=model.param_groups(0.0))
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses
    assert all(p.grad is None for p in adapter.tokenizer.parameters())  # frozen
    labels = torch.tensor([0, 1, 2, 2])
    first = sample_codes(model, 4, labels, steps=4, seed=3)
    assert first.shape == (4, 16) and int(first.min()) >= 0 and int(first.max()) < 16
    assert torch.equal(first, sample_codes(model, 4, labels, steps=4, seed=3))
    assert model.training  # sampling left the model's mode as it found it
    with pytest.raises(ValueError, match="class-conditional"):
        sample_codes(model, 4, None)


# ---- offline quality figures ------------------------------------------------------------------------
def test_frechet_distance_matches_scipys_matrix_square_root_and_is_zero_on_itself():
    import numpy as np
    import scipy.linalg

    from unimask.evaluation.generation import frechet_distance, precision_recall

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 6, generator=g), torch.randn(300, 6, generator=g) * 1.5 + 0.3
    s_a, s_b = np.cov(a.double().numpy().T), np.cov(b.double().numpy().T)
    expected = (((a.double().mean(0) - b.double().mean(0)) ** 2).sum().item()
                + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9
    assert precision_recall(a, a) == (1.0, 1.0)
    far = a + 100.0  # generated samples nowhere near the real ones: no precision, no recall
    assert precision_recall(a, far) == (0.0, 0.0)
    precision, recall = precision_recall(a, b)  # a wider set covers the real one better than it is covered
    assert recall > precision


@pytest.mark.slow
def test_maskgit_recipe_trains_generate_draws_and_fid_scores_it(tmp_path):
    """The user's commands under smoke (a random tokenizer: the shipped one is patch 4, smoke's
    patch 8): tools/train.py on gin/maskgit_cpu.gin and on a from-scratch classifier, then
    tools/generate.py (a grid, a row per class; a wrong --label exits 2) and tools/fid.py (the
    floor, random codes and MaskGIT rows, the closing fd= line)."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from helpers import ROOT

    def run(*args, expect=0):
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == expect, result.stderr[-2000:]
        return result

    common = ["--gin", "gin/smoke.gin", "--gin_param", "train.progress_bar=False"]
    run("tools/train.py", "--gin", "gin/maskgit_cpu.gin", *common, "--workdir", str(tmp_path / "gen"),
        "--gin_param", "CodesAdapter.checkpoint=None")
    generator, grid = str(tmp_path / "gen/checkpoints/last.pt"), str(tmp_path / "grid.png")
    run("tools/generate.py", "--checkpoint", generator, "--n", "20", "--steps", "3", "--out", grid,
        "--json", str(tmp_path / "gen.json"))
    assert json.loads((tmp_path / "gen.json").read_text())["labels"] == [c for c in range(10) for _ in range(2)]
    width, height = Image.open(grid).size
    assert height > width  # 10 rows of 2
    bad = run("tools/generate.py", "--checkpoint", generator, "--label", "12", "--out", grid, expect=2)
    assert "--label=12" in bad.stderr
    run("tools/train.py", "--gin", "gin/finetune_image.gin", *common, "--workdir", str(tmp_path / "cls"),
        "--gin_param", "train.init_from=None", "--gin_param", "Classifier.mixup=0.0", "--gin_param", "Classifier.cutmix=0.0")
    out = run("tools/fid.py", "--classifier", str(tmp_path / "cls/checkpoints/last.pt"), "--generator", generator,
              "--n", "60", "--steps", "2", "4", "--json", str(tmp_path / "fd.json")).stdout
    rows = json.loads((tmp_path / "fd.json").read_text())["rows"]
    assert [r["set"] for r in rows] == ["floor (train vs test)", "random codes", "MaskGIT, 2 steps", "MaskGIT, 4 steps"]
    assert all(r["fd"] >= 0 and 0 <= r["precision"] <= 1 for r in rows) and rows[-1]["cas"] is not None
    assert out.strip().splitlines()[-1] == f"fd={rows[-1]['fd']:.2f}"


def test_shipped_pixel_tokenizer_loads_into_the_maskgit_recipe_and_decodes_garments():
    """data/sample/tokenizers/fashion_vq512_pixels.pt is what gin/maskgit_cpu.gin reads on a fresh
    clone: the model's init leaves it as loaded (CodesAdapter.pretrained_parts), its decoder keeps
    the bindings it was trained with, and test images come back through their codes."""
    import gin

    from modalities.image import ImageDataset
    from unimask.cli import parse_gin

    parse_gin(["gin/maskgit_cpu.gin"], ["train.num_workers=0"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    shipped = torch.load("data/sample/tokenizers/fashion_vq512_pixels.pt", weights_only=True)["model"]
    for name, value in model.adapter.tokenizer.state_dict().items():
        assert torch.equal(value, shipped[name].to(value.dtype)), name
    data = ImageDataset(root="data/sample/images/fashion_mnist.npz", img_size=28, in_chans=1, augment=False,
                        split="test")
    images = torch.utils.data.default_collate([data[i] for i in range(64)])["image"]
    tokens = model.adapter.tokenize({"image": images, "label": torch.zeros(64, dtype=torch.long)})
    codes = tokens.patches[:, 1:, 0]
    assert len(codes.unique()) > 100  # of 512
    error = (model.adapter.decode(codes) - images).square().mean() / images.var()
    assert float(error) < 0.1, float(error)  # 0.04 as shipped; a redrawn or mis-bound decoder gives > 0.5
