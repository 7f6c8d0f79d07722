"""Foundation: tokens, masks, both encoding modes, learning, every recipe under smoke."""
import glob
import os

import gin
import numpy as np
import pytest
import torch

from helpers import SMOKE, fast_params, image_batch, read_metrics, run_train, tiny_image_model
from modalities.image import ImageAdapter
from unimask.patches import patchify, unpatchify
from modalities.video import VideoAdapter
from unimask.masking import RandomMasker, TubeMasker
from unimask.tokens import Tokens

GIN_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "gin", "*.gin")))
RECIPES = [f for f in GIN_FILES if os.path.basename(f) != "smoke.gin" and not os.path.basename(f).endswith("_arch.gin")]
MIXINS = {"pcp_centres.gin": "gin/point_mae_kicad_cpu.gin",  # mix-ins build on top of a recipe
          "jepa_switch.gin": "gin/image_mae_cpu.gin", "teacher_cpu.gin": "gin/mr_mae_cpu.gin"}
# the full distillation recipes name a teacher file the user provides: here a small random one
OUTSIDE_TEACHER = ["TimmTeacher.checkpoint=None", "TimmTeacher.model_kwargs={'depth': 2}", "TimmTeacher.layers=(-1,)"]
BUILD_ONLY = {  # their frozen parts come from checkpoints of the full-size recipes
    "distill_mae.gin": ["TeacherTarget.checkpoint=None", "TEACHER_DIM=64", "TEACHER_DEPTH=2", "TEACHER_HEADS=2"],
    "beit_v2_tiny.gin": ["TokenTarget.checkpoint=None"],  # the shipped tokenizer: patch 4, not smoke's 8
    "jepa_switch.gin": ["JEPAModel.adapter=@ImageAdapter()"],  # the switch leaves the adapter to the recipe
    "maskgit_cpu.gin": ["CodesAdapter.checkpoint=None"],  # the shipped pixel tokenizer: patch 4, not smoke's 8
    **{name: OUTSIDE_TEACHER for name in ("maskdistill.gin", "maskalign.gin", "mr_mae.gin", "dmae.gin")},
    # BEiT v2 at ViT-B: its VQ-KD tokenizer shrunk (smoke's macros do not reach it), no file
    "vq_kd.gin": OUTSIDE_TEACHER + ["TOK_DIM=64", "tokenizer/ViTEncoder.depth=2", "tokenizer/ViTEncoder.num_heads=2",
                                    "tokenizer/MAEDecoder.num_heads=2", "NUM_CODES=512"],
    "beit_v2.gin": ["TokenTarget.checkpoint=None", "TOK_DIM=64", "tokenizer/ViTEncoder.depth=2",
                    "tokenizer/ViTEncoder.num_heads=2", "tokenizer/MAEDecoder.num_heads=2", "NUM_CODES=512"],
    "beit_v2_cpu.gin": ["TokenTarget.checkpoint=None"],  # as beit_v2_tiny.gin
}


def test_image_tokens_shapes_and_roundtrip():
    adapter = ImageAdapter(img_size=16, patch_size=4, in_chans=3, dim=32)
    x = image_batch()["image"]
    tokens = adapter.tokenize({"image": x})
    assert tokens.patches.shape == (4, 16, 48) and tokens.coords.shape == (4, 16, 2)
    assert tokens.grid == (4, 4) and tokens.patch_shape == (4, 4, 3)
    assert torch.equal(unpatchify(patchify(x, (4, 4)), (4, 4), (4, 4), 3), x)


def test_video_tokens_are_tubelets():
    adapter = VideoAdapter(num_frames=4, img_size=16, patch_size=8, tubelet_size=2, dim=32)
    tokens = adapter.tokenize({"video": torch.randn(2, 3, 4, 16, 16)})
    assert tokens.patches.shape == (2, 2 * 2 * 2, 2 * 8 * 8 * 3) and tokens.grid == (2, 2, 2)
    assert tokens.coords[0, -1].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_mask_exact_count_per_sample(ratio):
    tokens = ImageAdapter(img_size=32, patch_size=4, dim=8).tokenize(image_batch(size=32))
    mask = RandomMasker()(tokens, ratio, torch.Generator().manual_seed(0))
    n = tokens.num_tokens
    hidden = int((ratio * n) + 0.5)
    assert mask.masked.sum(1).tolist() == [hidden] * 4
    assert mask.ids_keep.shape == (4, n - hidden) and bool(mask.keep_valid.all())
    # ids_keep are exactly the visible tokens; ids_restore inverts the visible-first order
    visible = torch.zeros_like(mask.masked).scatter(1, mask.ids_keep, True)
    assert torch.equal(visible, ~mask.masked)
    order = torch.argsort(mask.ids_restore, dim=1)
    assert torch.equal(order[:, : n - hidden], mask.ids_keep)


def test_tube_mask_identical_over_time_and_exact():
    adapter = VideoAdapter(num_frames=8, img_size=32, patch_size=8, tubelet_size=2, dim=8)
    tokens = adapter.tokenize({"video": torch.randn(3, 3, 8, 32, 32)})
    mask = TubeMasker()(tokens, 0.75, torch.Generator().manual_seed(1))
    per_time = mask.masked.view(3, 4, 16)
    assert bool((per_time == per_time[:, :1]).all())
    assert per_time[:, 0].sum(1).tolist() == [12, 12, 12]


def test_masks_are_deterministic_for_a_seed():
    tokens = ImageAdapter(img_size=32, patch_size=4, dim=8).tokenize(image_batch(size=32))
    a = RandomMasker()(tokens, 0.75, torch.Generator().manual_seed(5)).masked
    b = RandomMasker()(tokens, 0.75, torch.Generator().manual_seed(5)).masked
    c = RandomMasker()(tokens, 0.75, torch.Generator().manual_seed(6)).masked
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ragged_batches_keep_padding_out():
    patches = torch.randn(2, 10, 3)
    valid = torch.tensor([[True] * 10, [True] * 4 + [False] * 6])
    tokens = Tokens(patches, torch.randn(2, 10, 3), valid=valid)
    mask = RandomMasker()(tokens, 0.5, torch.Generator().manual_seed(0))
    assert mask.masked.sum(1).tolist() == [5, 2]
    assert not bool((mask.masked & ~valid).any())
    assert mask.keep_valid.sum(1).tolist() == [5, 2]
    kept = torch.gather(valid, 1, mask.ids_keep)
    assert bool(kept[mask.keep_valid].all())


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_ratio_raises(bad):
    tokens = ImageAdapter(img_size=16, patch_size=4, dim=8).tokenize(image_batch())
    with pytest.raises(ValueError, match="ratio"):
        RandomMasker()(tokens, bad)


@pytest.mark.parametrize("mode", ["drop", "replace"])
def test_forward_backward_both_modes(mode):
    model = tiny_image_model(mode=mode, replace_probs=(0.8, 0.1, 0.1) if mode == "replace" else (1, 0, 0))
    out = model(image_batch(), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads if g is not None) and sum(int(g is not None) for g in grads) > 10
    if mode == "replace":
        assert model.enc_mask_token.grad is not None and model.enc_mask_token.grad.abs().sum() > 0


def test_drop_mode_embeds_only_visible_tokens():
    model = tiny_image_model(ratio=0.75)
    seen = []
    model.adapter.proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model(image_batch(), generator=torch.Generator().manual_seed(0))
    assert seen == [torch.Size([4, 4, 48])]  # 16 tokens, 25% visible


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_last_block_on_scored_rows_equals_the_full_block(dtype):
    """The decoder computes its last block and head only where the loss looks; that must be the
    same numbers as running everything and picking those rows (with key padding, fp32 and bf16)."""
    from unimask.decoders import MAEDecoder
    from unimask.encoders import TransformerStack
    from unimask.tokens import gather_tokens

    torch.manual_seed(0)
    stack = TransformerStack(dim=32, depth=2, num_heads=4).eval()
    x = torch.randn(3, 20, 32)
    valid = torch.ones(3, 20, dtype=torch.bool)
    valid[1, 15:] = False  # a ragged sample: padded keys
    rows = torch.stack([torch.randperm(20)[:7] for _ in range(3)])
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        full = gather_tokens(stack(x, valid), rows)
        part = stack(x, valid, out_rows=rows)
    assert part.shape == (3, 7, 32)
    assert torch.allclose(part.float(), full.float(), atol=1e-5 if dtype is None else 3e-2)
    decoder = MAEDecoder(in_dim=32, dim=32, depth=1, num_heads=4).eval()
    decoder.init_head(12)
    assert torch.allclose(decoder(x, valid, out_rows=rows), gather_tokens(decoder(x, valid), rows), atol=1e-5)
    head_only = MAEDecoder(in_dim=32, dim=32, depth=0)  # SimMIM: the head alone
    head_only.init_head(12)
    assert torch.equal(head_only(x, out_rows=rows), gather_tokens(head_only(x), rows))


def test_pos_every_block_adds_the_position_codes_before_each_block():
    """Point-MAE's encoder and decoder run block(x + pos) at every block; the stack does that
    with `pos`, and the model passes the codes only to stacks that ask for them."""
    from unimask.decoders import MAEDecoder
    from unimask.encoders import TransformerStack, ViTEncoder

    torch.manual_seed(0)
    stack = TransformerStack(dim=32, depth=3, num_heads=4).eval()
    x, pos = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
    expected = x + pos
    for i, block in enumerate(stack.blocks):
        expected = block(expected if i == 0 else expected + pos)
    expected = stack.norm(expected)
    assert torch.allclose(stack(x + pos, pos=pos), expected, atol=1e-6)
    assert not torch.allclose(stack(x + pos, pos=pos), stack(x + pos), atol=1e-3)

    batch, gen = image_batch(), (lambda: torch.Generator().manual_seed(0))
    plain, every = tiny_image_model(), tiny_image_model()
    every.encoder = ViTEncoder(dim=32, depth=2, num_heads=2, pos_every_block=True)
    every.decoder = MAEDecoder(in_dim=32, dim=32, depth=1, num_heads=2, pos_every_block=True)
    every.decoder.init_head(plain.decoder.head.out_features)
    plain.load_state_dict(every.state_dict())  # same weights, only the flag differs
    seen = []
    every.encoder.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("pos")), with_kwargs=True)
    out_every, out_plain = every(batch, generator=gen()), plain(batch, generator=gen())
    assert seen[0] is not None and seen[0].shape == (4, 4, 32)  # the 4 visible tokens' codes
    assert not torch.allclose(out_every.loss, out_plain.loss)
    out_every.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in every.encoder.parameters() if p.grad is not None)
    features, valid = every.features(batch)
    assert features.shape == (4, 16, 32) and bool(valid.all())


def test_teacher_target_equals_the_student_encoder_it_copies_with_pos_every_block():
    """A data2vec / Point2Vec teacher is a copy of the student: at init its targets are the
    student's all-visible features, position codes at every block included."""
    from unimask.encoders import ViTEncoder
    from unimask.targets import EMATeacherTarget

    torch.manual_seed(0)
    model = tiny_image_model()
    model.encoder = ViTEncoder(dim=32, depth=2, num_heads=2, pos_every_block=True)
    model.target = EMATeacherTarget(latent_dim=32)
    model.target.attach(model)
    model.eval()
    batch = image_batch()
    latent, _ = model.target(model.adapter.tokenize(batch), model.adapter)
    features, _ = model.features(batch)
    assert torch.allclose(latent, features, atol=1e-6)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny_image_model(norm_pix=False, dim=64)
    batch = image_batch(batch=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen_seed = 3  # same mask every step: pure memorization
    losses = []
    for _ in range(150):
        out = model(batch, generator=torch.Generator().manual_seed(gen_seed))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


@pytest.mark.parametrize("recipe", RECIPES, ids=[os.path.basename(r) for r in RECIPES])
def test_every_recipe_builds_under_smoke(recipe):
    from unimask.cli import parse_gin
    from unimask.interfaces import PretrainingModel

    base = MIXINS.get(os.path.basename(recipe))
    parse_gin(([base] if base else []) + [recipe, SMOKE],
              ["train.num_workers=0", *BUILD_ONLY.get(os.path.basename(recipe), [])])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    assert isinstance(model, PretrainingModel)  # what the trainer runs
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # smoke really shrinks it


def test_train_end_to_end_under_smoke(tmp_path):
    workdir = str(tmp_path / "run")
    code = run_train(["--gin", "gin/video_mae.gin", "--gin", "gin/smoke.gin", "--workdir", workdir,
                      *fast_params("train.steps=12", "train.eval_every=6")])
    assert code == 0
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"step", "loss", "lr", "mask_ratio", "samples_per_s", "skipped"} <= set(rows[0])
    assert abs(rows[0]["mask_ratio"] - 0.9) < 1e-6 and "eval_loss" in rows[5] and "eval_loss" in rows[-1]
    for name in ("config.gin", "run.json", "checkpoints/last.pt", "recon/step_6.png", "recon/step_12.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    from PIL import Image

    with Image.open(os.path.join(workdir, "recon", "step_12.png")) as figure:  # labeled rows, the step on top
        assert figure.text == {"panels": "input / masked / reconstruction", "step": "12"}
        strip = np.asarray(figure.convert("L"))[:14]
        assert (strip < 128).any() and (strip == 255).mean() > 0.5  # text drawn on a white strip
    state = torch.load(os.path.join(workdir, "checkpoints", "last.pt"), weights_only=False)
    assert {"model", "optimizer", "step", "rng", "config", "schedules", "data"} <= set(state)
    assert state["step"] == 12


def test_unknown_gin_binding_is_named(tmp_path):
    with pytest.raises(Exception, match="no_such_param"):
        run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", str(tmp_path),
                   "--gin_param", "train.no_such_param=3"])


def test_reconstruction_figure_titles_each_panel(tmp_path):
    """save_rows(columns=PANELS): a white strip above the grid with a title over each of the
    three panels (dark pixels above each column), and the titles in the PNG's text."""
    from PIL import Image

    from modalities.grid import PANELS, save_rows

    panels = [torch.full((1, 8, 8), 0.5) for _ in range(3)]
    path = save_rows([panels], str(tmp_path / "r.png"), columns=PANELS)
    with Image.open(path) as figure:
        pixels = np.asarray(figure.convert("L"))
        assert figure.text["panels"] == "input / masked / reconstruction"
    width = pixels.shape[1] // 3
    assert pixels.shape[0] == 14 + 14 * (2 + 8 + 2)  # the strip, then one row of 8 px panels (+ padding) x 14
    for column in range(3):
        assert (pixels[:14, column * width:(column + 1) * width] < 128).any(), column
