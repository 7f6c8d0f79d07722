"""Teachers from files users keep (timm state dicts, Hugging Face folders) and several objectives
per model (MaskDistill, MaskAlign, MR-MAE, DMAE): features equal the library's own, grids line
up, gradients stay with their heads, checkpoints hold only the teacher's checksum."""
import io

import pytest
import torch
import torch.nn.functional as F

from helpers import SMOKE, fast_params, read_metrics, run_train, tiny_image_model
from modalities.image import ImageAdapter
from unimask.losses import MSELoss, SmoothL1Loss
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel
from unimask.encoders import ViTEncoder
from unimask.objectives import TokenObjective
from unimask.targets.outside import HFTeacher, TimmTeacher

VIT = dict(name="vit_tiny_patch16_224", model_kwargs={"img_size": 32, "patch_size": 4, "depth": 2})


def saved_vit(tmp_path, fmt="pth", seed=1, **kwargs):
    """A random timm ViT saved as a state dict: the file a user would download."""
    import timm

    torch.manual_seed(seed)
    net = timm.create_model(VIT["name"], pretrained=False, **{**VIT["model_kwargs"], **kwargs})
    path = tmp_path / f"teacher_{seed}.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    return net.eval(), str(path)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_timm_teacher_features_equal_forward_features_after_renormalization(tmp_path, fmt):
    net, path = saved_vit(tmp_path, fmt)
    teacher = TimmTeacher(checkpoint=path, normalize=False, **VIT)
    adapter = ImageAdapter(img_size=32, patch_size=4, in_chans=3, dim=16)  # ImageNet mean/std
    pixels = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor((0.485, 0.456, 0.406))[:, None, None], torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    tokens = adapter.tokenize({"image": (pixels - mean) / std})  # what ImageDataset hands over
    ours, _ = teacher(tokens, adapter)  # [2, 64, 192]
    cfg_mean, cfg_std = (torch.tensor(net.pretrained_cfg[k])[:, None, None] for k in ("mean", "std"))
    with torch.no_grad():
        theirs = net.forward_features((pixels - cfg_mean) / cfg_std)[:, net.num_prefix_tokens:]
    assert ours.shape == (2, 64, 192) and teacher.dim(adapter) == 192
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    hooked = TimmTeacher(checkpoint=path, normalize=False, layers=(0,), final_norm=False, **VIT)(tokens, adapter)[0]
    with torch.no_grad():
        x = net.patch_drop(net.norm_pre(net._pos_embed(net.patch_embed((pixels - cfg_mean) / cfg_std))))
        first_block = net.blocks[0](x)[:, net.num_prefix_tokens:]
    torch.testing.assert_close(hooked, first_block, atol=2e-5, rtol=1e-4)


def test_grid_interpolation_patch_14_to_16_and_a_cnn_stage_to_the_patch_grid():
    student = ImageAdapter(img_size=64, patch_size=16, in_chans=1, dim=16)  # 4 x 4 tokens, grayscale
    tokens = student.tokenize({"image": torch.randn(2, 1, 64, 64)})
    vit14 = TimmTeacher(name="vit_tiny_patch16_224", normalize=False,
                        model_kwargs={"img_size": 70, "patch_size": 14, "depth": 1})  # 5 x 5 teacher grid
    values, _ = vit14(tokens, student)
    assert values.shape == (2, 16, 192)
    resnet = TimmTeacher(name="resnet18", img_size=64, layers=(-1,), normalize=False)  # stride 32: 2 x 2
    values, _ = resnet(tokens, student)
    assert values.shape == (2, 16, 512) and resnet.dim(student) == 512
    x = resnet.normalized(student.dense_input(tokens))
    with torch.no_grad():
        stage = resnet.network.forward_features(x)  # [2, 512, 2, 2]
    expected = F.interpolate(stage, size=(4, 4), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-4)
    two = TimmTeacher(name="resnet18", img_size=64, layers=(3, 4), normalize=False)  # stem = 0: layer3 + layer4
    assert two(tokens, student)[0].shape == (2, 16, 256 + 512)


def test_random_init_teacher_is_the_same_network_every_time_and_is_frozen():
    a, b = TimmTeacher(init_seed=3, **VIT), TimmTeacher(init_seed=3, **VIT)
    assert torch.equal(a.teacher_sha256, b.teacher_sha256)
    for pa, pb in zip(a.network.parameters(), b.network.parameters()):
        assert torch.equal(pa, pb) and not pa.requires_grad
    assert not torch.equal(a.teacher_sha256, TimmTeacher(init_seed=4, **VIT).teacher_sha256)


def test_teacher_file_errors_name_the_file(tmp_path):
    _, path = saved_vit(tmp_path, depth=3)  # one block more than the teacher the recipe describes
    with pytest.raises(ValueError, match=f"{path}.*does not fit.*unexpected"):
        TimmTeacher(checkpoint=path, **VIT)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        TimmTeacher(checkpoint=str(tmp_path / "missing.pth"), **VIT)


def distilled_model(teacher):
    """A tiny student MAE whose objective mimics the teacher at its visible tokens (MR-MAE)."""
    return tiny_image_model(img_size=32, patch=4, objectives=[TokenObjective(target=teacher, loss=SmoothL1Loss())])


def test_checkpoint_holds_the_teachers_checksum_not_its_weights_and_refuses_another(tmp_path):
    _, path_a = saved_vit(tmp_path, seed=1)
    _, path_b = saved_vit(tmp_path, seed=2)
    small = distilled_model(TimmTeacher(checkpoint=path_a, **VIT))
    big = distilled_model(TimmTeacher(name=VIT["name"], model_kwargs={"img_size": 32, "patch_size": 4, "depth": 12}))
    keys = [k for k in small.state_dict() if ".target." in k]
    assert keys == ["objectives.0.target.teacher_sha256"]

    def size(model):
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        return buffer.tell()

    assert size(small) == size(big)  # 12 blocks or 2: the teacher adds only its 32-byte checksum
    state = small.state_dict()
    distilled_model(TimmTeacher(checkpoint=path_a, **VIT)).load_state_dict(state)  # same file: fine
    other = distilled_model(TimmTeacher(checkpoint=path_b, **VIT))
    with pytest.raises(ValueError, match=f"sha256.*{path_b}.*same teacher file"):
        other.load_state_dict(state)


def test_each_objectives_gradient_reaches_only_its_head_and_the_encoder():
    teacher = TimmTeacher(**VIT)
    model = tiny_image_model(img_size=32, patch=4, objectives=[
        TokenObjective(target=teacher, loss=MSELoss(), name="mimic"),
        TokenObjective(target=teacher, loss=SmoothL1Loss(), head="mlp", hidden_dim=24, name="align", layer=0)])
    out = model({"image": torch.randn(2, 3, 32, 32)}, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"recon", "mimic", "align"}
    torch.testing.assert_close(out.loss, sum(out.terms.values()))
    src = (out.mask.ids_keep, out.mask.keep_valid)
    recon, _ = model.score(model.decode(out.extras["latent"], *src, out.tokens, out.mask), out.tokens, out.mask)
    heads = {"mimic": "objectives.0.head", "align": "objectives.1.head", "recon": "decoder"}
    terms = {"mimic": model.objectives[0](out, *src), "align": model.objectives[1](out, *src), "recon": recon}
    for name, term in terms.items():
        torch.testing.assert_close(term.detach(), out.terms[name])
        model.zero_grad()
        term.backward(retain_graph=True)
        grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert any(n.startswith(heads[name]) for n in grads), name
        assert not any(n.startswith(h) for n in grads for k, h in heads.items() if k != name), (name, sorted(grads))
        assert any(n.startswith("encoder.") for n in grads) and not any(".target." in n for n in grads)


def test_a_shared_teacher_runs_once_per_step():
    teacher = TimmTeacher(**VIT)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    model = tiny_image_model(img_size=32, patch=4, objectives=[
        TokenObjective(target=teacher, loss=MSELoss()), TokenObjective(target=teacher, loss=MSELoss(), layer=1)])
    model({"image": torch.randn(2, 3, 32, 32)})
    assert len(calls) == 1


def test_maskalign_has_no_decoder_and_scores_visible_tokens_only():
    teacher = TimmTeacher(**VIT)
    adapter = ImageAdapter(img_size=32, patch_size=4, in_chans=3, dim=32)
    model = MaskedModel(adapter, RandomMasker(), ConstantRatio(0.7), ViTEncoder(dim=32, depth=2, num_heads=2), None,
                        objectives=[TokenObjective(target=teacher, loss=SmoothL1Loss(), name="align")])
    batch = {"image": torch.randn(2, 3, 32, 32)}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"align"} and out.pred is None and out.loss.requires_grad
    assert out.extras["latent"].shape[1] == 64 - round(0.7 * 64)  # the encoder saw the visible tokens only
    with pytest.raises(NotImplementedError, match="decoder=None"):
        model.render(batch, out, "x.png")
    with pytest.raises(ValueError, match="decoder=None needs objectives"):
        MaskedModel(adapter, RandomMasker(), ConstantRatio(0.7), ViTEncoder(dim=32, depth=2, num_heads=2), None)
    with pytest.raises(ValueError, match="needs MaskedModel.mode='replace'"):
        MaskedModel(adapter, RandomMasker(), ConstantRatio(0.7), ViTEncoder(dim=32, depth=2, num_heads=2), None,
                    objectives=[TokenObjective(target=teacher, loss=MSELoss(), tokens="hidden")])


def test_objective_losses_fall_when_trained():
    teacher = TimmTeacher(**VIT)
    model = tiny_image_model(img_size=32, patch=4, objectives=[TokenObjective(target=teacher, loss=MSELoss(),
                                                                              name="mimic")])
    batch = {"image": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for step in range(40):
        out = model(batch, generator=torch.Generator().manual_seed(step % 2))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append({k: float(v) for k, v in out.terms.items()})
    for name in ("recon", "mimic"):
        assert history[-1][name] < 0.7 * history[0][name], (name, history[0], history[-1])


def test_hugging_face_clip_and_dinov2_folders_teach(tmp_path):
    transformers = pytest.importorskip("transformers")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                 patch_size=8)
    adapter = ImageAdapter(img_size=32, patch_size=4, in_chans=3, dim=16)  # 8 x 8 student grid
    tokens = adapter.tokenize({"image": torch.randn(2, 3, 32, 32)})
    for name, model in (("clip", transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**small))),
                        ("dinov2", transformers.Dinov2Model(transformers.Dinov2Config(**small)))):
        folder = tmp_path / name
        model.save_pretrained(folder, safe_serialization=True)
        teacher = HFTeacher(folder=str(folder), normalize=False)
        values, _ = teacher(tokens, adapter)
        assert values.shape == (2, 64, 32), name
        x = teacher.normalized(adapter.dense_input(tokens))
        with torch.no_grad():
            last = model.eval()(pixel_values=x).last_hidden_state[:, -16:]  # 4 x 4 patch tokens
        expected = F.interpolate(last.transpose(1, 2).reshape(2, 32, 4, 4), size=(8, 8), mode="bilinear",
                                 align_corners=False).flatten(2).transpose(1, 2)
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-4)


CPU_RECIPES = {"maskdistill_cpu": ["loss"], "maskalign_cpu": ["loss_align"], "mr_mae_cpu": ["loss_recon", "loss_mimic"],
               "dmae_cpu": ["loss_recon", "loss_features"]}


@pytest.mark.parametrize("recipe", sorted(CPU_RECIPES))
def test_cpu_recipe_trains_under_smoke_with_every_term_logged_and_falling(tmp_path, recipe):
    workdir = str(tmp_path / recipe)
    assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=40", "train.eval_every=40")]) == 0
    rows = [r for r in read_metrics(workdir) if "loss" in r]
    for term in CPU_RECIPES[recipe]:
        first, last = (sum(r[term] for r in part) / len(part) for part in (rows[:5], rows[-5:]))
        assert last < 0.9 * first, (term, first, last)


def vq_tokenizer(target=None, loss=None):
    from unimask.decoders import MAEDecoder
    from unimask.models.vq import VQTokenizer

    torch.manual_seed(0)
    return VQTokenizer(ImageAdapter(img_size=32, patch_size=4, in_chans=3, dim=24), ViTEncoder(dim=24, depth=1, num_heads=2),
                       MAEDecoder(in_dim=8, dim=24, depth=1, num_heads=2), num_codes=64, code_dim=8, target=target,
                       loss=loss)


def test_vq_kd_tokenizer_learns_a_teachers_features_and_beit_v2_reads_its_codes(tmp_path):
    from unimask.losses import SCELoss
    from unimask.targets.codes import TokenTarget

    kd = vq_tokenizer(TimmTeacher(normalize=False, **VIT), SCELoss(alpha=1.0))
    assert [k for k in kd.state_dict() if k.startswith("target.")] == ["target.teacher_sha256"]
    batch = {"image": torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    optimizer = torch.optim.AdamW(kd.parameters(), lr=2e-3)
    recon = []
    for _ in range(30):
        out = kd(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        recon.append(float(out.terms["recon"]))
    assert recon[-1] < 0.8 * recon[0] and 1 <= float(out.stats["perplexity"]) <= 64
    path = tmp_path / "vq_kd.pt"
    torch.save({"model": kd.state_dict()}, path)
    target = TokenTarget(tokenizer=vq_tokenizer(), checkpoint=str(path))  # a pixel head: the teacher is not rebuilt
    tokens = kd.adapter.tokenize(batch)
    codes, _ = target(tokens, kd.adapter)
    assert torch.equal(codes[..., 0], kd.codes(tokens)) and target.dim(kd.adapter) == 64
