"""Two views, one encoder (SiamMAE, CropMAE): views, extreme masking, cross-attention, training."""
import os

import pytest
import torch

from helpers import ROOT, SMOKE, fast_params, read_metrics, run_train
from modalities.image import ImageAdapter, ImageDataset
from modalities.video import VideoDataset
from modalities.views import CropPairs, FramePairs
from unimask.cross_decoder import CrossSelfDecoder
from unimask.encoders import ViTEncoder
from unimask.masking import ConstantRatio, RandomMasker
from unimask.patches import unpatchify
from unimask.models.siamese import SiameseModel
from unimask.targets import PixelTarget


def siamese(ratio=0.75, mode="cross_self", size=16, patch=4):
    return SiameseModel(ImageAdapter(img_size=size, patch_size=patch, in_chans=3, dim=32), ViTEncoder(dim=32, depth=2,
                        num_heads=2), CrossSelfDecoder(in_dim=32, dim=32, depth=2, num_heads=2, mode=mode),
                        RandomMasker(), ConstantRatio(ratio), target=PixelTarget(norm_pix=False))


def pair(batch=3, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, 3, size, size, generator=gen),
            "image_2": torch.randn(batch, 3, size, size, generator=gen)}


def test_both_views_go_through_the_same_encoder_weights():
    model = siamese()
    calls = []
    forward = model.encoder.forward
    model.encoder.forward = lambda x, *a, **k: (calls.append(x.shape[1]), forward(x, *a, **k))[1]
    out = model(pair(), generator=torch.Generator().manual_seed(0))
    assert calls == [16, 4]  # view 1 whole, then view 2's 25% visible: one module, one set of weights
    assert len({id(p) for p in model.encoder.parameters()}) == sum(1 for _ in model.encoder.parameters())
    out.loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_the_count_rule_holds_at_98_5_percent():
    model = siamese(ratio=0.985, size=224, patch=16)
    tokens = model.adapter.tokenize({"image": torch.randn(4, 3, 224, 224)})
    _, mask = model.make_masks(tokens, tokens, 0.0, torch.Generator().manual_seed(0))
    assert mask.keep_valid.sum(1).tolist() == [3, 3, 3, 3]  # 14 x 14 grid: round(0.985 * 196) = 193 hidden
    tiny = siamese(ratio=0.985, size=28, patch=4)
    few = tiny.adapter.tokenize({"image": torch.randn(2, 3, 28, 28)})
    assert tiny.make_masks(few, few, 0.0, torch.Generator().manual_seed(0))[1].keep_valid.sum(1).tolist() == [1, 1]


@pytest.mark.parametrize("mode", ["cross_self", "cross"])
def test_view_1_is_never_touched_by_view_2(mode):
    model = siamese(mode=mode).eval()
    batch = pair()
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = model(batch, generator=generator())
    hidden = out.mask.masked[0]  # [16] view 2's hidden patches of sample 0
    patches = model.adapter.tokenize({"image": batch["image_2"]}).patches.clone()
    patches[0, hidden] += torch.randn_like(patches[0, hidden])  # change only view 2's hidden patches
    again = model(dict(batch, image_2=unpatchify(patches, (4, 4), (4, 4), 3)), generator=generator())
    torch.testing.assert_close(again.extras["view1_latent"], out.extras["view1_latent"])  # keys/values of view 1 only
    torch.testing.assert_close(again.pred, out.pred)  # the hidden patches' pixels never reach the model
    other = model(dict(batch, image=torch.randn(3, 3, 16, 16)), generator=generator())
    assert not torch.allclose(other.pred, out.pred)  # the decoder does read view 1


def test_view_samplers_give_two_views_of_one_scene():
    clips = VideoDataset(root=os.path.join(ROOT, "data", "sample", "video", "train.csv"), num_frames=2, img_size=32)
    frames = FramePairs(clips, min_gap=4, max_gap=48, img_size=32)
    sample = frames[(0, 3)]
    assert sample["image"].shape == sample["image_2"].shape == (3, 32, 32) and sample["label"] == 0
    assert not torch.equal(sample["image"], sample["image_2"]) and torch.equal(frames[(0, 3)]["image"], sample["image"])
    images = ImageDataset(root=os.path.join(ROOT, "data", "sample", "images", "fashion_mnist.npz"), img_size=28,
                          in_chans=1, augment=False)
    crops = CropPairs(images)[(5, 1)]
    assert crops["image"].shape == crops["image_2"].shape == (1, 28, 28)
    with pytest.raises(ValueError, match="min_gap"):
        FramePairs(clips, min_gap=10, max_gap=4)


def test_frame_pair_probes_use_the_videos_label_free_windows():
    root = os.path.join(ROOT, "data", "sample", "video", "train.csv")
    sides = {}
    for split in ("train", "test"):
        clips = VideoDataset(root=root, num_frames=2, sampling_rate=4, img_size=32, augment=False, probe="identity",
                             clips_per_video=3, split=split)
        sides[split] = FramePairs(clips, img_size=32, augment=False)
        assert len(sides[split]) == 12 and [sides[split][i]["label"] for i in (0, 3, 6, 11)] == [0, 1, 2, 3]
        window = clips[4]["video"]  # [3, 2, 32, 32]: frames 4 apart
        pair = sides[split][4]
        assert torch.equal(pair["image"], window[:, 0]) and torch.equal(pair["image_2"], window[:, 1])
    assert not torch.equal(sides["train"][0]["image"], sides["test"][0]["image"])  # early vs late frames


@pytest.mark.parametrize("recipe", ["siam_mae", "siam_mae_cpu", "crop_mae", "crop_mae_cpu"])
def test_two_view_recipes_train_under_smoke_and_draw_the_views(tmp_path, recipe):
    workdir = str(tmp_path / recipe)
    assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.num_workers=1")]) == 0
    evals = [r["eval_loss"] for r in read_metrics(workdir) if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0], evals
    assert os.path.isfile(os.path.join(workdir, "recon", "step_30.png"))


def test_eval_probes_one_view_of_a_siamese_checkpoint(tmp_path):
    import eval as evaluator

    workdir = str(tmp_path / "crop")
    assert run_train(["--gin", "gin/crop_mae_cpu.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=2", "IMG_SIZE=28", "PATCH=4")]) == 0
    result = evaluator.evaluate(["--checkpoint", os.path.join(workdir, "checkpoints", "last.pt"), "--protocol", "knn"])
    assert result["n_train"] == 4000 and result["n_test"] == 1000 and result["top1_acc"] > 10
