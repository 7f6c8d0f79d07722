"""Training engine: exact resume, accumulation, robustness, distributed."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, fast_params, read_metrics, run_train
from unimask.interfaces import Masker
from unimask.masking.base import count_hidden
from unimask.train import checkpoint as ckpt

RECIPE = ["--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin"]


def final_state(workdir):
    """The final checkpoint, a file or (FSDP runs) a sharded folder."""
    return ckpt.load_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))


def test_resume_is_bit_identical(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert run_train(RECIPE + ["--workdir", straight, *fast_params("train.steps=8")]) == 0
    assert run_train(RECIPE + ["--workdir", split, *fast_params("train.steps=8", "train.stop_at=4")]) == 0
    assert final_state(split)["step"] == 4
    assert run_train(RECIPE + ["--workdir", split, "--resume", *fast_params("train.steps=8")]) == 0
    a, b = final_state(straight), final_state(split)
    assert b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(split)]


def build_trainer(*params):
    from unimask.cli import parse_gin, seed_for_init
    from unimask.train.trainer import Trainer

    parse_gin(["gin/image_mae_cpu.gin", "gin/smoke.gin"],
              ["train.num_workers=0", "train.precision='fp32'", "train.progress_bar=False",
               "ImageDataset.augment=False", "RandomMasker.unit=(4, 4)", *params])
    seed_for_init()
    return Trainer()


class FirstTokensMasker(Masker):
    """Hides the first round(ratio * N) tokens of every sample: a mask that does not depend on
    how the batch is split, so accumulation can be compared with one big batch."""

    def hide(self, tokens, ratio, generator):
        n = tokens.num_tokens
        return torch.arange(n)[None] < count_hidden(ratio, torch.full_like(ratio, n))[:, None]


def test_accumulation_equals_one_big_batch():
    """1 step of batch 2B == 2 accumulated micro-batches of B, up to float tolerance."""
    results = []
    for accum in (1, 2):
        trainer = build_trainer("train.batch_size=8", f"train.accum_steps={accum}")
        trainer.model.masker = FirstTokensMasker()
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        loader = iter(trainer.make_loader(0))
        batches = [{k: v for k, v in next(loader).items() if k != "n_bad"} for _ in range(accum)]
        assert sum(len(b["image"]) for b in batches) == 8
        trainer.train_step(batches)
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert not torch.equal(initial["encoder.blocks.0.attn.qkv.weight"], results[1]["encoder.blocks.0.attn.qkv.weight"])
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)


class NaNAt(torch.nn.Module):
    """Wraps a model and poisons its loss at chosen calls (every call when steps is None)."""

    def __init__(self, model, steps=None):
        super().__init__()
        self.model, self.steps, self.calls = model, steps, 0

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if self.steps is None or self.calls in self.steps:
            out.loss = out.loss * float("nan")
        self.calls += 1
        return out


def test_nan_loss_is_skipped_and_counted(tmp_path):
    trainer = build_trainer("train.steps=4")
    trainer.train_model = NaNAt(trainer.model, steps={1})
    weights_after = []
    original_step = trainer.train_step
    trainer.train_step = lambda batches: (original_step(batches),
                                          weights_after.append(trainer.model.adapter.proj.weight.clone()))[0]
    trainer.fit(str(tmp_path))
    rows = read_metrics(str(tmp_path))
    assert [r["skipped"] for r in rows] == [0, 1, 1, 1]
    assert torch.equal(weights_after[0], weights_after[1])  # the poisoned step changed nothing
    assert not torch.equal(weights_after[1], weights_after[2])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_consecutive_nan_stops_with_clear_message(tmp_path):
    from unimask.train.trainer import NonFiniteLossError

    trainer = build_trainer("train.steps=10", "train.max_consecutive_skips=3")
    trainer.train_model = NaNAt(trainer.model)
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.fit(str(tmp_path))


def test_truncated_checkpoint_is_detected_and_previous_loads(tmp_path):
    workdir = str(tmp_path)
    assert run_train(RECIPE + ["--workdir", workdir, *fast_params("train.steps=4", "train.ckpt_every=2")]) == 0
    folder = os.path.join(workdir, "checkpoints")
    last = os.path.join(folder, "last.pt")
    data = open(last, "rb").read()
    with open(last, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt.*prev.pt"):
        ckpt.load_checkpoint(last)
    assert ckpt.load_checkpoint(os.path.join(folder, "prev.pt"))["step"] == 2
    with pytest.warns(UserWarning, match="resuming from"):
        assert ckpt.load_latest(folder)["step"] == 2


def test_state_dict_prefixes_are_stripped_and_mismatches_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    ckpt.load_model_state(model, state)
    with pytest.raises(ckpt.CheckpointError, match="missing keys.*unexpected keys.*'extra'"):
        ckpt.load_model_state(model, {"extra": torch.zeros(1)})


def test_sigterm_leaves_a_loadable_checkpoint(tmp_path):
    workdir = str(tmp_path)
    cmd = [sys.executable, "tools/train.py", *RECIPE, "--workdir", workdir,
           *fast_params("train.steps=100000", "train.ckpt_every=100000", "train.eval_every=100000",
                        "train.num_workers=1")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not os.path.exists(metrics) or len(open(metrics).readlines()) < 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # like a scheduler: the whole group, data workers included
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    state = ckpt.load_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))
    assert 3 <= state["step"] < 100000 and "signal" in out


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_accumulation(tmp_path, sharding):
    """torchrun (gloo), 2 processes (DDP or FSDP) == 1 process with 2 accumulated micro-batches."""
    single, multi = str(tmp_path / "single"), str(tmp_path / sharding)
    common = ["train.steps=2", "train.batch_size=4", "ImageDataset.augment=False"]
    assert run_train(RECIPE + ["--workdir", single, *fast_params(*common, "train.accum_steps=2")]) == 0
    extra = ["train.fsdp=True"] if sharding == "fsdp" else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "tools/train.py", *RECIPE, "--workdir", multi, *fast_params(*common, *extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    a, b = read_metrics(single), read_metrics(multi)
    assert len(b) == 2
    assert abs(a[0]["loss"] - b[0]["loss"]) < 1e-5, (a[0]["loss"], b[0]["loss"])
    sa, sb = final_state(single)["model"], final_state(multi)["model"]
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5, msg=key)


def test_export_loads_into_timm_and_embeds_identically(tmp_path, capsys):
    import export
    from unimask.weights.build import model_from_checkpoint

    workdir = str(tmp_path / "run")
    assert run_train(RECIPE + ["--workdir", workdir, *fast_params("train.steps=2")]) == 0
    out = str(tmp_path / "enc.pth")
    assert export.main(["--checkpoint", os.path.join(workdir, "checkpoints", "last.pt"), "--out", out]) == 0
    printed = capsys.readouterr().out
    model, _ = model_from_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))
    state, kwargs, name = export.encoder_state(model)
    assert f"timm.create_model({name!r}, pretrained=False, **{kwargs}" in printed  # the line users copy
    timm_model = export.load_into_timm(torch.load(out), name, kwargs, model.encoder.norm.eps).eval()  # strict
    image = torch.randn(2, 1, 32, 32)
    ours = model.adapter.embed(model.adapter.tokenize({"image": image}).patches, None, None)  # [B, N, D]
    theirs = timm_model.patch_embed(image)  # [B, N, D]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    model.eval()
    features, _ = model.features({"image": image})  # [B, N, D], every token visible
    torch.testing.assert_close(timm_model.forward_features(image), features, rtol=1e-5, atol=1e-5)


def test_ema_of_weights_follows_its_formula(tmp_path):
    trainer = build_trainer("train.steps=2", "train.ema_decay=0.5")
    key = "encoder.blocks.0.attn.qkv.weight"
    weights = [trainer.model.state_dict()[key].clone()]
    original_step = trainer.train_step
    trainer.train_step = lambda batches: (original_step(batches),
                                          weights.append(trainer.model.state_dict()[key].clone()))[0]
    trainer.fit(str(tmp_path))
    w0, w1, w2 = weights
    expected = 0.25 * w0 + 0.25 * w1 + 0.5 * w2  # ema <- 0.5 ema + 0.5 w, twice, from w0
    state = final_state(str(tmp_path))
    torch.testing.assert_close(state["ema"][key], expected)
    assert not torch.equal(state["ema"][key], state["model"][key])


def test_export_of_a_video_checkpoint_prints_no_timm_line(tmp_path, capsys):
    import export

    workdir = str(tmp_path / "video")
    assert run_train(["--gin", "gin/video_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", workdir,
                      *fast_params("train.steps=1")]) == 0
    out = str(tmp_path / "enc.pth")
    assert export.main(["--checkpoint", os.path.join(workdir, "checkpoints", "last.pt"), "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "timm.create_model" not in printed and "video ViT" in printed
    assert torch.load(out)["patch_embed.proj.weight"].dim() == 5  # Conv3d [D, C, t, p, p]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_activation_checkpointing_gives_the_same_step(tmp_path, precision):
    """train.activation_checkpointing recomputes blocks in backward: same loss, same gradients,
    also under bf16 autocast, where short sequences attend through another SDPA kernel that the
    recomputation must use too."""
    from helpers import image_batch, tiny_image_model

    from unimask.train.precision import autocast
    from unimask.transformer import set_activation_checkpointing

    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = tiny_image_model()
        assert set_activation_checkpointing(model, on) == 2  # encoder and decoder stacks
        with autocast(precision, torch.device("cpu")):
            out = model(image_batch(), generator=torch.Generator().manual_seed(1))
        out.loss.backward()
        grads.append((float(out.loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    trainer = build_trainer("train.steps=2", "train.activation_checkpointing=True")
    assert all(m.grad_checkpointing for m in trainer.model.modules() if hasattr(m, "grad_checkpointing"))
