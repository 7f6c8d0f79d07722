"""dBOT's multi-stage distillation (train.stages): at each new stage the teacher takes the
student's weights, the student starts afresh, the optimizer forgets and the learning-rate
schedule restarts; a resume across a stage boundary is bit-identical."""
import os

import pytest
import torch

from helpers import SMOKE, cli, fast_params, read_metrics, run_train, tiny_image_model
from unimask.optim import Stages
from unimask.targets import EMATeacherTarget

DBOT = ["--gin", "gin/dbot_cpu.gin", "--gin", SMOKE]


def test_stages_split_the_run_and_restart_the_schedule():
    stages = Stages(3, 10)
    assert stages.starts == [0, 3, 7, 10]
    assert [s for s in range(10) if stages.starts_at(s)] == [3, 7]
    assert [stages.local(s) for s in (0, 2, 3, 6, 7, 9)] == [(0, 3), (2, 3), (0, 4), (3, 4), (0, 3), (2, 3)]
    assert not any(Stages(1, 10).starts_at(s) for s in range(10))
    with pytest.raises(ValueError, match="train.stages=11"):
        Stages(11, 10)
    with pytest.raises(ValueError, match="needs a model whose target is a teacher"):
        Stages(2, 10, model_restarts=False)


def test_begin_stage_hands_the_student_to_the_teacher_and_redraws_the_student():
    def model():
        torch.manual_seed(0)
        return tiny_image_model(img_size=16, target=EMATeacherTarget(latent_dim=32, momentum=1.0))

    trained, twin = model(), model()
    with torch.no_grad():  # as if trained: the student moved away from its initialization
        for p in list(trained.encoder.parameters()) + list(twin.encoder.parameters()):
            p.add_(0.1)
    before = {k: v.clone() for k, v in trained.encoder.state_dict().items()}
    trained.begin_stage(1)
    twin.begin_stage(1)
    teacher = trained.target.teacher_encoder.state_dict()
    assert all(torch.equal(teacher[k], before[k]) for k in before)  # the teacher is the student as it stood
    after = trained.encoder.state_dict()
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    assert torch.equal(after["norm.weight"], torch.ones_like(after["norm.weight"]))  # MAE's init again
    for key, value in twin.state_dict().items():  # seeded by the stage: the same draw every time
        assert torch.equal(value, trained.state_dict()[key]), key
    assert trained.restarts_stages and not tiny_image_model().restarts_stages


def final_state(workdir):
    return torch.load(os.path.join(workdir, "checkpoints", "last.pt"), weights_only=False)


def test_two_stage_run_restarts_lr_and_resumes_bit_identically_across_the_boundary(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = ["train.steps=12", "train.warmup_steps=2", "train.eval_every=100"]
    assert run_train(DBOT + ["--workdir", straight, *fast_params(*common)]) == 0
    assert run_train(DBOT + ["--workdir", split, *fast_params(*common, "train.stop_at=4")]) == 0
    assert run_train(DBOT + ["--workdir", split, "--resume", *fast_params(*common)]) == 0
    rows = read_metrics(straight)
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs[6:] == lrs[:6] and lrs[5] < lrs[1]  # the second stage runs the same warmup + cosine again
    a, b = final_state(straight), final_state(split)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(split)]


def test_stages_with_a_target_that_has_no_teacher_fail_fast(tmp_path):
    code, output, seconds = cli(["tools/train.py", "--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir",
                                 str(tmp_path / "run")], ["train.stages=2", "train.num_workers=0"])
    assert code != 0 and "train.stages=2 needs a model whose target is a teacher" in output, output[-2000:]
