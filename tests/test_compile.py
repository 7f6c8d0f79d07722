"""train.compile=True on every kind of recipe: grids, clips, point groups, ragged graph batches,
replace-mode text, local-window audio attention, two views and several modalities. Each run
compiles its encoder and decoder with inductor (tens of seconds on CPU), so these are slow."""
import os

import pytest
import torch

from helpers import fast_params, read_metrics, run_train

RECIPES = ["gin/image_mae_cpu.gin", "gin/video_mae_cpu.gin", "gin/point_mae_cpu.gin", "gin/graph_mae.gin",
           "gin/text_mlm_cpu.gin", "gin/audio_mae_cpu.gin", "gin/siam_mae_cpu.gin", "gin/av_digits_mae.gin"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_compiled_training_runs_and_saves_plain_keys(tmp_path, recipe):
    workdir = str(tmp_path / "run")
    args = ["--gin", recipe, "--gin", "gin/smoke.gin", "--workdir", workdir]
    assert run_train(args + fast_params("train.steps=4", "train.eval_every=4", "train.ckpt_every=4",
                                        "train.compile=True")) == 0
    rows = [row for row in read_metrics(workdir) if "loss" in row]
    assert rows[-1]["step"] == 4 and all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    state = torch.load(os.path.join(workdir, "checkpoints", "last.pt"), map_location="cpu", weights_only=False)
    assert not [key for key in state["model"] if "_orig_mod" in key]


@pytest.mark.slow
def test_compiled_stacks_do_not_break_the_graph_on_padding():
    """Whether a batch pads anything is decided before the compiled forward (None when it pads
    nothing), so neither an unpadded nor a padded batch breaks the graph; outputs as eager."""
    from torch._dynamo.utils import counters

    from unimask.encoders import ViTEncoder
    from unimask.train.compile import compile_stacks

    torch.manual_seed(0)
    eager = ViTEncoder(dim=32, depth=2, num_heads=2)
    holder = torch.nn.Module()
    holder.encoder = ViTEncoder(dim=32, depth=2, num_heads=2)
    holder.encoder.load_state_dict(eager.state_dict())
    assert compile_stacks(holder) == 1
    x = torch.randn(2, 10, 32)
    for valid in (torch.ones(2, 10, dtype=torch.bool), torch.tensor([[True] * 10, [True] * 6 + [False] * 4])):
        counters.clear()
        out = holder.encoder(x, valid)
        assert not counters["graph_break"], dict(counters["graph_break"])
        torch.testing.assert_close(out[valid], eager(x, valid)[valid], atol=1e-5, rtol=1e-5)
