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
