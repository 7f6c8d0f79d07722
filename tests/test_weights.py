"""Weights in and out (unimask/weights, tools/export.py): timm, official MAE, VideoMAE and Hugging
Face layouts load with the right numbers; exports load strictly elsewhere; fine-tuning's pieces."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, SMOKE, fast_params, read_metrics, run_train
from modalities.image import ImageAdapter
from modalities.video import VideoAdapter
from unimask.models.classifier import Classifier
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel
from unimask.optim import param_groups
from unimask.targets import PixelTarget
from unimask.weights import WeightsError, load_pretrained
from unimask.weights.export import canonical_encoder, to_hf

timm = pytest.importorskip("timm")


def vit_tiny_classifier(**adapter_kw):
    """vit_tiny_patch16_224's shape: 224 px, patch 16, 12 x 192, 3 heads, [CLS], eps 1e-6."""
    adapter = ImageAdapter(img_size=224, patch_size=16, in_chans=3, dim=192, pos_embed="learned", **adapter_kw)
    encoder = ViTEncoder(dim=192, depth=12, num_heads=3, class_token=True, norm_eps=1e-6)
    return Classifier(adapter, encoder, num_classes=1000, pool="cls", layer_decay=None)


def features_with_cls(model, image):  # [B, 1 + N, D], as timm's forward_features
    from unimask.encoders import encode_all

    return encode_all(model.adapter, model.encoder, {"image": image}, with_cls=True)[0]


def test_timm_vit_tiny_loads_and_gives_timms_features(tmp_path, capsys):
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    path = str(tmp_path / "vit_tiny.pth")
    torch.save(reference.state_dict(), path)
    model = vit_tiny_classifier().eval()
    report = load_pretrained(model, path)
    assert report.layout == "timm" and not report.problems
    assert "head.weight" in report.loaded  # the same 1000-class head
    printed = capsys.readouterr().out
    assert "init_from" in printed and "timm layout" in printed
    image = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(features_with_cls(model, image), reference.forward_features(image),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.logits({"image": image}), reference(image), rtol=1e-4, atol=1e-4)


def mae_sincos(dim: int, size: int) -> np.ndarray:
    """facebookresearch/mae util/pos_embed.py get_2d_sincos_pos_embed(dim, size, cls_token=True)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape(2, 1, size, size)
    table = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], axis=0)


def mae_checkpoint(dim=64, depth=2, heads=2, dec_dim=32, dec_depth=1, size=32, patch=8, chans=3) -> dict:
    """A state dict in models_mae.py's layout (MaskedAutoencoderViT), saved as main_pretrain.py
    saves it: {'model': ..., 'args': Namespace, 'epoch': ...}."""
    torch.manual_seed(1)
    encoder = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, patch_size=patch,
                                in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0)
    decoder = timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=dec_dim, depth=dec_depth,
                                num_heads=heads, num_classes=0)
    n = (size // patch) ** 2
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("head", "fc_norm"))}
    state["pos_embed"] = torch.from_numpy(mae_sincos(dim, size // patch)).float()[None]
    state["decoder_embed.weight"], state["decoder_embed.bias"] = torch.randn(dec_dim, dim) * 0.02, torch.zeros(dec_dim)
    state["mask_token"] = torch.randn(1, 1, dec_dim) * 0.02
    state["decoder_pos_embed"] = torch.from_numpy(mae_sincos(dec_dim, size // patch)).float()[None]
    for key, value in decoder.state_dict().items():
        if key.startswith("blocks."):
            state["decoder_" + key] = value
        elif key.startswith("norm."):
            state["decoder_" + key] = value
    state["decoder_pred.weight"] = torch.randn(patch * patch * chans, dec_dim) * 0.02
    state["decoder_pred.bias"] = torch.zeros(patch * patch * chans)
    assert len(state["decoder_pos_embed"][0]) == n + 1
    return {"model": state, "args": argparse.Namespace(model="mae_vit_tiny"), "epoch": 799}


def mae_shaped_model(**adapter_kw) -> MaskedModel:
    adapter = ImageAdapter(img_size=32, patch_size=8, in_chans=3, dim=64, **adapter_kw)
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.75),
                       ViTEncoder(dim=64, depth=2, num_heads=2, class_token=True, norm_eps=1e-6),
                       MAEDecoder(in_dim=64, dim=32, depth=1, num_heads=2, norm_eps=1e-6), PixelTarget(norm_pix=True))


def test_official_mae_checkpoint_loads_encoder_and_decoder(tmp_path):
    path = str(tmp_path / "mae_pretrain.pth")
    saved = mae_checkpoint()
    torch.save(saved, path)
    with pytest.raises(WeightsError, match="pos_embed"):  # MAE writes its sin-cos with the axes swapped
        load_pretrained(mae_shaped_model(), path)
    assert "pos_axes='xy'" in load_pretrained(mae_shaped_model(), path, strict=False).summary()  # the hint
    model = mae_shaped_model(pos_axes="xy")
    report = load_pretrained(model, path)
    assert not report.problems and not [k for k in report.new if not k.startswith("target.")], report.summary()
    assert "pos_embed" in report.checked and "decoder_pos_embed" in report.checked
    state = model.state_dict()
    mae = saved["model"]
    torch.testing.assert_close(state["encoder.blocks.1.mlp.fc2.weight"], mae["blocks.1.mlp.fc2.weight"])
    torch.testing.assert_close(state["decoder.body.blocks.0.attn.qkv.weight"], mae["decoder_blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(state["decoder.head.weight"], mae["decoder_pred.weight"])
    torch.testing.assert_close(state["encoder.cls_token"], mae["cls_token"])  # + its zero position row
    # the patch embedding: our linear on (p q c) patches equals MAE's conv
    image = torch.randn(2, 3, 32, 32)
    conv = torch.nn.functional.conv2d(image, mae["patch_embed.proj.weight"], mae["patch_embed.proj.bias"], stride=8)
    ours = model.adapter.embed(model.adapter.tokenize({"image": image}).patches, None, None)
    torch.testing.assert_close(ours, conv.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_compiled_and_ddp_prefixes_are_stripped(tmp_path):
    model = mae_shaped_model(pos_axes="xy")
    state = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    path = str(tmp_path / "compiled.pt")
    torch.save({"model": state, "config": ""}, path)
    other = mae_shaped_model(pos_axes="xy")
    report = load_pretrained(other, path)
    assert report.layout == "unimask" and not report.problems
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_a_key_that_does_not_fit_is_named_unless_partial(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / "vit_small.pth")
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, depth=12).state_dict(), path)
    with pytest.raises(WeightsError, match=r"patch_embed\.proj\.weight|blocks\.0"):
        load_pretrained(vit_tiny_classifier(), path)
    path = str(tmp_path / "vit_tiny_8.pth")  # 8 blocks of the 12: the rest is missing
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=8).state_dict(), path)
    with pytest.raises(WeightsError, match=r"missing encoder\.blocks\.8"):
        load_pretrained(vit_tiny_classifier(), path)
    report = load_pretrained(vit_tiny_classifier(), path, strict=False)
    assert "encoder.blocks.11.mlp.fc2.weight" in report.missing and "encoder.blocks.7.mlp.fc2.weight" in report.loaded


def test_position_table_is_resampled_to_another_grid(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / "vit_tiny.pth")
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), path)
    adapter = ImageAdapter(img_size=256, patch_size=16, in_chans=3, dim=192, pos_embed="learned")
    model = Classifier(adapter, ViTEncoder(dim=192, depth=12, num_heads=3, class_token=True), num_classes=1000,
                       layer_decay=None)
    report = load_pretrained(model, path)
    assert "adapter.pos_table" in report.reshaped and model.adapter.pos_table.shape == (256, 192)


def tiny_video_model() -> MaskedModel:
    adapter = VideoAdapter(num_frames=4, img_size=32, patch_size=8, tubelet_size=2, dim=64, pos_embed="learned")
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.9),
                       ViTEncoder(dim=64, depth=2, num_heads=2, norm_eps=1e-12),
                       MAEDecoder(in_dim=64, dim=32, depth=1, num_heads=2, norm_eps=1e-12), PixelTarget())


def hf_videomae_config():
    import transformers

    return transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                       decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=128,
                                       use_mean_pooling=False, norm_pix_loss=False)


def test_hf_videomae_for_pretraining_loads_and_gives_its_features(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    reference = transformers.VideoMAEForPreTraining(hf_videomae_config()).eval()
    for name, param in reference.named_parameters():  # HF zero-inits q/v biases; make them count
        if name.endswith(("q_bias", "v_bias")):
            torch.nn.init.normal_(param, std=0.1)
    folder = str(tmp_path / "hf")
    reference.save_pretrained(folder)
    model = tiny_video_model().eval()
    report = load_pretrained(model, folder)
    assert report.layout == "hf" and not report.problems, report.summary()
    assert set(report.new) <= {"decoder.embed.bias"}  # VideoMAE's encoder_to_decoder has none (= zero)
    video = torch.randn(2, 3, 4, 32, 32)  # ours [B, C, T, H, W]; HF's [B, T, C, H, W]
    with torch.no_grad():
        theirs = reference.videomae(video.transpose(1, 2)).last_hidden_state
        ours, _ = model.features({"video": video})
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_official_videomae_layout_loads(tmp_path):
    """MCG-NJU/VideoMAE modeling_pretrain.py: encoder.*, q_bias / v_bias, encoder_to_decoder
    (no bias), decoder.blocks / norm / head, a fixed (unsaved) 1-D sinusoid table."""
    source = tiny_video_model()
    canonical = canonical_encoder(source)
    state = {}
    for key, value in canonical.items():
        if key == "pos_embed":
            continue
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            state["encoder." + key.replace("qkv.bias", "q_bias")] = q
            state["encoder." + key.replace("qkv.bias", "v_bias")] = v
        else:
            state["encoder." + key] = value
    decoder = source.state_dict()
    state["encoder_to_decoder.weight"] = decoder["decoder.embed.weight"]
    state["mask_token"] = decoder["decoder.mask_token"]
    for key, value in decoder.items():
        if key.startswith("decoder.body.blocks."):
            state["decoder.blocks." + key[len("decoder.body.blocks."):]] = value
        elif key.startswith("decoder.body.norm."):
            state["decoder.norm." + key[len("decoder.body.norm."):]] = value
        elif key.startswith("decoder.head."):
            state["decoder.head." + key[len("decoder.head."):]] = value
    path = str(tmp_path / "videomae_pretrain.pth")
    torch.save({"model": state}, path)
    model = tiny_video_model()
    report = load_pretrained(model, path)
    assert report.layout == "videomae" and not report.problems, report.summary()
    assert set(report.new) <= {"decoder.embed.bias"}
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["encoder.blocks.0.attn.qkv.weight"], decoder["encoder.blocks.0.attn.qkv.weight"])
    q, k, v = loaded["encoder.blocks.0.attn.qkv.bias"].chunk(3)
    assert torch.equal(k, torch.zeros_like(k))  # VideoMAE has no key bias (and needs none)
    from unimask.weights.load import sinusoid_table

    torch.testing.assert_close(loaded["adapter.pos_table"], sinusoid_table(32, 64))


def test_exports_load_strictly_into_timm_and_hugging_face(tmp_path):
    transformers = pytest.importorskip("transformers")
    from unimask.weights.export import save_hf

    image_model = mae_shaped_model()
    folder = str(tmp_path / "vitmae")
    save_hf(image_model, folder)
    loaded, info = transformers.ViTMAEModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    video_model = tiny_video_model()
    folder = str(tmp_path / "videomae")
    save_hf(video_model, folder)
    loaded, info = transformers.VideoMAEModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again = tiny_video_model()  # and back: the HF folder starts a unimask run with the same weights
    load_pretrained(again, folder, strict=False)
    for key in ("encoder.blocks.1.mlp.fc1.weight", "adapter.proj.weight", "encoder.norm.weight"):
        torch.testing.assert_close(again.state_dict()[key], video_model.state_dict()[key])
    hf = to_hf(canonical_encoder(video_model), tubelets=True)
    assert "encoder.layer.0.attention.attention.q_bias" in hf


def test_layer_decay_gives_the_documented_learning_rates():
    adapter = ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=32, pos_embed="learned")
    model = Classifier(adapter, ViTEncoder(dim=32, depth=3, num_heads=2, class_token=True), num_classes=4,
                       layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in param_groups(model, 0.05) for p in g["params"]}
    params = dict(model.named_parameters())
    expected = {"adapter.proj.weight": 0.5 ** 4, "adapter.pos_table": 0.5 ** 4, "encoder.cls_token": 0.5 ** 4,
                "encoder.blocks.0.attn.qkv.weight": 0.5 ** 3, "encoder.blocks.2.mlp.fc1.bias": 0.5,
                "encoder.norm.weight": 1.0, "fc_norm.weight": 1.0, "head.weight": 1.0}
    for name, value in expected.items():
        assert scale[id(params[name])] == pytest.approx(value), name
    decays = {id(p): g["weight_decay"] for g in param_groups(model, 0.05) for p in g["params"]}
    assert decays[id(params["head.weight"])] == 0.05 and decays[id(params["adapter.pos_table"])] == 0.0


def test_trainer_applies_the_lr_scales(tmp_path):
    from unimask.cli import parse_gin

    import gin

    parse_gin(["gin/finetune_image.gin", SMOKE], ["train.num_workers=0", "train.init_from=None", "train.steps=3",
                                                  "train.precision='fp32'", "train.progress_bar=False"])
    trainer = gin.get_configurable("train")()
    batch = next(iter(trainer.make_loader(0)))
    trainer.train_step([batch])
    from unimask.optim import lr_at

    lr = lr_at(0, trainer.steps, trainer.peak_lr, trainer.warmup_steps, trainer.min_lr)
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(lr * group["lr_scale"])
    assert len({g["lr_scale"] for g in trainer.optimizer.param_groups}) == 2 + 2  # depth 2: 4 layers


def test_thaw_factor_waits_then_warms_up_again():
    from unimask.optim import thaw_factor

    assert [thaw_factor(step, 10, 0.5, 2) for step in range(4, 9)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert thaw_factor(0, 10, 0.0, 2) == 1.0  # never frozen


def test_linear_probe_first_trains_only_the_head_then_everything():
    """LP-FT through the trainer: while frozen the adapter and encoder keep their weights (no
    gradient, lr 0), the head moves; after the thaw the encoder moves too, from a fresh warmup."""
    from unimask.cli import parse_gin

    import gin

    parse_gin(["gin/finetune_image.gin", SMOKE], ["train.num_workers=0", "train.init_from=None", "train.steps=6",
                                                  "train.warmup_steps=2", "train.precision='fp32'",
                                                  "train.progress_bar=False", "Classifier.linear_probe_first=0.5"])
    trainer = gin.get_configurable("train")()
    thaws = {g["thaw_at"] for g in trainer.optimizer.param_groups}
    assert thaws == {0.0, 0.5}
    batch = next(iter(trainer.make_loader(0)))
    names = ("encoder.blocks.0.attn.qkv.weight", "adapter.proj.weight", "head.weight")
    start = {name: trainer.model.state_dict()[name].clone() for name in names}
    for _ in range(3):  # steps 0, 1, 2: frozen (3 < ceil(0.5 x 6))
        trainer.train_step([batch])
    state = trainer.model.state_dict()
    assert torch.equal(state["encoder.blocks.0.attn.qkv.weight"], start["encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(state["adapter.proj.weight"], start["adapter.proj.weight"])
    assert not torch.equal(state["head.weight"], start["head.weight"])
    trainer.train_step([batch])  # step 3: thawed, lr x 1/2 of the schedule's
    encoder_groups = [g for g in trainer.optimizer.param_groups if g["thaw_at"] == 0.5]
    head_groups = [g for g in trainer.optimizer.param_groups if g["thaw_at"] == 0.0]
    assert encoder_groups[0]["lr"] == pytest.approx(0.5 * head_groups[0]["lr"] * encoder_groups[0]["lr_scale"]
                                                    / head_groups[0]["lr_scale"])
    assert not torch.equal(trainer.model.state_dict()["encoder.blocks.0.attn.qkv.weight"],
                           start["encoder.blocks.0.attn.qkv.weight"])


def test_linear_probe_first_must_be_a_fraction():
    adapter = ImageAdapter(img_size=16, patch_size=4, in_chans=1, dim=32)
    with pytest.raises(ValueError, match="linear_probe_first"):
        Classifier(adapter, ViTEncoder(dim=32, depth=1, num_heads=2), num_classes=4, linear_probe_first=1.0)


def test_finetune_recipe_from_a_pretrained_run_reports_top1(tmp_path):
    """The CLI as users run it, workers on: pretrain (smoke), fine-tune from it, top-1 logged."""
    pretrain = str(tmp_path / "pretrain")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", pretrain,
                      *fast_params("train.steps=4")]) == 0
    workdir = str(tmp_path / "finetune")
    checkpoint = os.path.join(pretrain, "checkpoints", "last.pt")
    cmd = [sys.executable, "tools/train.py", "--gin", "gin/finetune_image.gin", "--gin", SMOKE, "--workdir", workdir,
           "--gin_param", f"train.init_from='{checkpoint}'", "--gin_param", "train.steps=6",
           "--gin_param", "train.eval_every=3", "--gin_param", "train.num_workers=1",
           "--gin_param", "train.progress_bar=False"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "init_from" in result.stdout and "unimask layout" in result.stdout
    assert "dropped (19)" in result.stdout and "new (5)" in result.stdout  # the decoder; fc_norm, head, pos table
    rows = [r for r in read_metrics(workdir) if "eval_top1" in r]
    assert len(rows) == 2 and all(0 <= r["eval_top1"] <= 100 for r in rows)
    assert all("train_top1" in r for r in read_metrics(workdir))
    missing = subprocess.run(cmd[:-2] + ["--gin_param", "train.init_from='nowhere.pt'"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "nowhere.pt" in missing.stderr


def test_traced_encoder_matches_the_model(tmp_path):
    import export

    pretrain = str(tmp_path / "run")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", pretrain,
                      *fast_params("train.steps=2")]) == 0
    checkpoint = os.path.join(pretrain, "checkpoints", "last.pt")
    out = str(tmp_path / "encoder.pt2")
    assert export.main(["--checkpoint", checkpoint, "--out", out, "--format", "export"]) == 0
    from unimask.weights.build import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    image = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected, _ = model.features({"image": image})
        traced = torch.export.load(out).module()(image)
    torch.testing.assert_close(traced, expected, rtol=1e-5, atol=1e-5)


def test_finetune_video_recipe_trains_from_a_pretrained_run(tmp_path):
    pretrain = str(tmp_path / "pretrain")
    assert run_train(["--gin", "gin/video_mae_cpu.gin", "--gin", SMOKE, "--workdir", pretrain,
                      *fast_params("train.steps=2")]) == 0
    workdir = str(tmp_path / "finetune")
    checkpoint = os.path.join(pretrain, "checkpoints", "last.pt")
    assert run_train(["--gin", "gin/finetune_video.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params(f"train.init_from='{checkpoint}'", "train.steps=4", "train.eval_every=2")]) == 0
    rows = [r for r in read_metrics(workdir) if "eval_top1" in r]
    assert len(rows) == 2 and all(0 <= r["eval_top1"] <= 100 for r in rows)
    from unimask.weights.build import model_from_checkpoint

    model, _ = model_from_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))
    start = torch.load(checkpoint, weights_only=False)["model"]
    assert model.adapter.pos_table.shape[0] == 2 * 4 * 4  # (T', H', W') of the smoke clip: learned table
    assert not torch.equal(model.state_dict()["encoder.blocks.0.mlp.fc1.weight"], start["encoder.blocks.0.mlp.fc1.weight"])


def test_official_mae_checkpoint_starts_a_fine_tune(tmp_path):
    """MAE's main_finetune.py use: the pretraining checkpoint into a classifier with a learned
    position table; the decoder is dropped, the head and fc_norm are new, nothing else differs."""
    path = str(tmp_path / "mae_pretrain.pth")
    saved = mae_checkpoint()
    torch.save(saved, path)
    adapter = ImageAdapter(img_size=32, patch_size=8, in_chans=3, dim=64, pos_embed="learned")
    model = Classifier(adapter, ViTEncoder(dim=64, depth=2, num_heads=2, class_token=True, norm_eps=1e-6),
                       num_classes=10)
    report = load_pretrained(model, path)
    assert not report.problems and set(report.new) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    assert "decoder_pos_embed" in report.dropped and any(k.startswith("decoder.body.") for k in report.dropped)
    torch.testing.assert_close(model.adapter.pos_table, saved["model"]["pos_embed"][0, 1:])  # MAE's own table


def test_masked_model_from_checkpoint_rebuilds_a_run_and_asks_for_gin_otherwise(tmp_path):
    run = str(tmp_path / "run")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", run,
                      *fast_params("train.steps=2")]) == 0
    checkpoint = os.path.join(run, "checkpoints", "last.pt")
    model = MaskedModel.from_checkpoint(checkpoint)  # its own gin config
    saved = torch.load(checkpoint, weights_only=False)["model"]
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    path = str(tmp_path / "vit_tiny.pth")
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError, match="timm state dict without a gin config"):
        MaskedModel.from_checkpoint(path)


def test_layout_includes_load_a_timm_file_with_timms_features(tmp_path):
    """gin/layouts/timm_vit.gin on a recipe whose defaults do not fit a timm file (no [CLS], fixed
    positions, eps 1e-5): without it the error names the include; with it the features are
    timm's forward_features."""
    import gin

    from unimask.cli import parse_gin

    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                  embed_dim=64, depth=2, num_heads=2, num_classes=0).eval()
    path = str(tmp_path / "timm_vit.pth")
    torch.save(reference.state_dict(), path)
    shape = ["IMG_SIZE = 32", "PATCH = 8", "IN_CHANS = 3", "ENC_DIM = 64", "ENC_DEPTH = 2", "ENC_HEADS = 2"]

    def build(files):
        parse_gin(["gin/image_mae_cpu.gin", *files], shape)
        return gin.query_parameter("train.model").scoped_configurable_fn().eval()

    with pytest.raises(WeightsError, match="include 'gin/layouts/timm_vit.gin'.*LayerNorm eps 1e-06"):
        load_pretrained(build([]), path, verbose=False)
    report = load_pretrained(build(["gin/layouts/timm_vit.gin"]), path, verbose=False)
    assert not report.problems and not report.notes, report.summary()
    model = build(["gin/layouts/timm_vit.gin"])
    load_pretrained(model, path, verbose=False)
    assert model.encoder.norm.eps == 1e-6
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(features_with_cls(model, image), reference.forward_features(image),
                                   rtol=1e-5, atol=1e-5)
    parse_gin(["gin/image_mae_cpu.gin", "gin/layouts/timm_vit.gin"], shape + ["ViTEncoder.norm_eps = 1e-5"])
    report = load_pretrained(gin.query_parameter("train.model").scoped_configurable_fn(), path, verbose=False)
    assert any("eps is 1e-05" in note and "timm_vit.gin" in note for note in report.notes), report.notes


@pytest.mark.parametrize("layout", ["mae_vit", "videomae_vit"])
def test_mae_and_videomae_layout_includes_fit_their_files(tmp_path, layout):
    """The other two includes fit the layouts the tests above build (MAE's pretraining file into
    the image recipe, the official VideoMAE layout into the video recipe)."""
    import gin

    from unimask.cli import parse_gin

    if layout == "mae_vit":
        state, recipe = mae_checkpoint(), "gin/image_mae_cpu.gin"
        shape = ["IMG_SIZE = 32", "PATCH = 8", "IN_CHANS = 3"]
    else:
        source = tiny_video_model()
        state = {"model": {("encoder." + k if not k.startswith("cls") else k): v
                           for k, v in canonical_encoder(source).items() if k != "pos_embed"}}
        recipe = "gin/video_mae_cpu.gin"
        shape = ["NUM_FRAMES = 4", "IMG_SIZE = 32", "PATCH = 8"]
    path = str(tmp_path / f"{layout}.pth")
    torch.save(state, path)
    parse_gin([recipe, f"gin/layouts/{layout}.gin"],
              shape + ["ENC_DIM = 64", "ENC_DEPTH = 2", "ENC_HEADS = 2", "DEC_DIM = 32", "DEC_DEPTH = 1", "DEC_HEADS = 2"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    report = load_pretrained(model, path, strict=False, verbose=False)
    assert not report.mismatched and not report.unexpected and not report.missing, report.summary()
    assert not any("eps" in note for note in report.notes) and model.encoder.norm.eps == 1e-6
    assert ("adapter.pos_table" in report.converted) == (layout == "videomae_vit")  # the 1-D sinusoid, filled in
