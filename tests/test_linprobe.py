"""The linear probe as a training run (gin/linprobe_mae.gin, MAE's main_linprobe): timm's LARS
against MAE's update rule, a frozen encoder that stays bit-identical while the head learns, the
CLI from a pretrained run to eval_top1, exact resume, and two processes under torchrun."""
import os

import pytest
import torch
from torch import nn

from helpers import SMOKE, WORKERS, cli, fast_params, read_metrics, run_train
from test_distributed import final as final_state, free_port, run
from unimask.interfaces import PretrainingModel
from unimask.optim import LARS_MOMENTUM, LARS_TRUST, make_optimizer
from unimask.train.workers import close_loader

LINPROBE = ["--gin", "gin/linprobe_mae_cpu.gin", "--gin", "gin/smoke.gin"]
FROZEN = ("adapter.", "encoder.", "fc_norm.")
SMALL_TEST = "test/ImageDataset.limit=64"  # eval_top1 on 64 test images: seconds, not the sample's 1000


class Head(PretrainingModel):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)


def mae_lars_step(param, grad, mu, lr, weight_decay):
    """MAE's util/lars.py step, written out: trust ratio and decay for ndim > 1 only, then
    mu = momentum x mu + dp (mu starts at 0), p -= lr x mu."""
    if param.ndim > 1:
        grad = grad + weight_decay * param
        param_norm, update_norm = param.norm(), grad.norm()
        grad = grad * (LARS_TRUST * param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0)
    mu = LARS_MOMENTUM * mu + grad
    return param - lr * mu, mu


def test_timm_lars_steps_as_maes_reference():
    torch.manual_seed(0)
    model = Head()
    lr, params = 6.4, dict(model.named_parameters())  # MAE's lr at batch 16384: 0.1 x 16384 / 256
    expected = {name: p.detach().clone() for name, p in params.items()}
    momenta = {name: torch.zeros_like(p) for name, p in params.items()}
    optimizer = make_optimizer(model, lr, 0.0, (0.9, 0.999), torch.device("cpu"), "lars")
    for _ in range(2):  # the second step reads the momentum buffer
        grads = {name: torch.randn_like(p) for name, p in params.items()}
        for name, p in params.items():
            p.grad = grads[name].clone()
            expected[name], momenta[name] = mae_lars_step(expected[name], grads[name], momenta[name], lr, 0.0)
        optimizer.step()
        for name, p in params.items():
            torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # why make_optimizer splits the groups: timm's Lars alone leaves a weight-decay-0 group unadapted
    plain = Head()
    plain.load_state_dict({"head.weight": expected["head.weight"], "head.bias": expected["head.bias"]})
    from timm.optim import Lars

    naive = Lars(plain.parameters(), lr=lr, momentum=LARS_MOMENTUM)
    plain.head.weight.grad = torch.ones_like(plain.head.weight)
    before = plain.head.weight.detach().clone()
    naive.step()
    torch.testing.assert_close(plain.head.weight.detach(), before - lr)  # plain SGD: no trust ratio


def linprobe_trainer(*params):
    from unimask.cli import parse_gin, seed_for_init
    from unimask.train.trainer import Trainer

    parse_gin(["gin/linprobe_mae_cpu.gin", SMOKE],
              ["train.init_from=None", "train.num_workers=1", "train.precision='fp32'",
               "train.progress_bar=False", SMALL_TEST, "ViTEncoder.drop_path=0.5", *params])
    seed_for_init()
    return Trainer()


def test_frozen_encoder_is_bit_identical_while_the_head_and_its_batchnorm_learn():
    trainer = linprobe_trainer("train.base_lr=25.6")  # lr 0.4 at batch 4: the head visibly moves
    model = trainer.model
    norm, linear = model.head
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine and norm.weight is None and norm.eps == 1e-6
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(linear.weight), id(linear.bias)}  # nothing frozen reaches the optimizer
    assert {g["always_adapt"] for g in trainer.optimizer.param_groups} == {True, False}
    start = {k: v.clone() for k, v in model.state_dict().items()}
    loader = iter(trainer.make_loader(0))
    try:
        for _ in range(3):
            batch = {k: v for k, v in next(loader).items() if k != "n_bad"}
            trainer.train_step([batch])
            assert model.training and not model.encoder.training and not model.adapter.training
            assert norm.training  # its statistics update, as in MAE's train mode
        with torch.no_grad():  # drop path 0.5 bound, yet the frozen encoder's features do not vary
            torch.testing.assert_close(model.pooled_features(batch), model.pooled_features(batch), rtol=0, atol=0)
    finally:
        close_loader(loader)
    state = model.state_dict()
    frozen = [k for k in state if k.startswith(FROZEN)]
    assert frozen and all(torch.equal(state[k], start[k]) for k in frozen)
    for key in ("head.1.weight", "head.1.bias", "head.0.running_mean", "head.0.running_var"):
        assert not torch.equal(state[key], start[key]), key
    assert int(state["head.0.num_batches_tracked"]) == 3


def test_linprobe_cli_from_a_pretrained_run_logs_top1_and_keeps_its_encoder(tmp_path):
    """Pretrain (smoke, in this process), then the probe through the CLI as users run it (a
    subprocess, a data worker, a timeout)."""
    pretrain, probe = tmp_path / "pretrain", tmp_path / "probe"
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE, "--workdir", str(pretrain),
                      *fast_params("train.steps=2", "train.num_workers=1")]) == 0
    checkpoint = os.path.join(pretrain, "checkpoints", "last.pt")
    code, out, _ = cli(["tools/train.py", *LINPROBE, "--workdir", str(probe)],
                       WORKERS + [f"train.init_from='{checkpoint}'", "train.steps=4", "train.eval_every=2", SMALL_TEST])
    assert code == 0, out[-3000:]
    rows = [r for r in read_metrics(str(probe)) if "eval_top1" in r]
    assert [r["step"] for r in rows] == [2, 4] and all(0 <= r["eval_top1"] <= 100 for r in rows)
    pretrained, probed = final_state(pretrain)["model"], final_state(probe)
    encoder = [k for k in probed["model"] if k.startswith(("adapter.", "encoder."))]
    assert encoder and all(torch.equal(probed["model"][k], pretrained[k]) for k in encoder)
    assert set(probed["optimizer"]["state"]) == {"head.1.weight", "head.1.bias"}


def test_resume_is_bit_identical(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = ["train.init_from=None", "train.steps=6", "train.num_workers=1", SMALL_TEST]
    assert run_train(LINPROBE + ["--workdir", straight, *fast_params(*common)]) == 0
    assert run_train(LINPROBE + ["--workdir", split, *fast_params(*common, "train.stop_at=3")]) == 0
    assert final_state(split)["step"] == 3
    assert run_train(LINPROBE + ["--workdir", split, "--resume", *fast_params(*common)]) == 0
    a, b = final_state(straight), final_state(split)
    assert b["step"] == 6
    for key in a["model"]:  # the BatchNorm's running statistics included
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():  # LARS's momentum buffers
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]), key
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(split)]
    assert read_metrics(straight)[-1]["eval_top1"] == read_metrics(split)[-1]["eval_top1"]


# DDP ~17 s on 2 quiet cores; FSDP 14-34 s, by the load: the slow step
@pytest.mark.slow  # README's suite keeps the single-process probe tests; .ci/run runs these
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_accumulation(tmp_path, sharding):
    """torchrun (gloo), 2 processes == 1 process with 2 accumulated micro-batches: the head agrees.
    The BatchNorm's running statistics are per process (rank 0's are saved, as in MAE), so they
    and eval_top1, which reads them, are not compared."""
    common = ["train.init_from=None", "train.steps=3", "train.batch_size=8", "ImageDataset.augment=False",
              "train.base_lr=25.6", SMALL_TEST]
    single = str(tmp_path / "single")
    assert run_train(LINPROBE + ["--workdir", single, *fast_params(*common, "train.accum_steps=2")]) == 0
    multi = str(tmp_path / sharding)
    extra = ["train.fsdp=True"] if sharding == "fsdp" else []
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "tools/train.py",
         *LINPROBE, "--workdir", multi, *fast_params(*common, *extra, "train.num_workers=1")])
    la, lb = [r["loss"] for r in read_metrics(single)], [r["loss"] for r in read_metrics(multi)]
    assert len(lb) == 3 and all(abs(x - y) < 1e-4 for x, y in zip(la, lb)), (la, lb)
    a, b = final_state(single)["model"], final_state(multi)["model"]
    for key in a:
        if not key.startswith("head.0."):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
