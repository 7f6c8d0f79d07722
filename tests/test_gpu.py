"""GPU checks (issue 52): bf16 autocast, fused AdamW, the fused SDPA kernel being the one chosen,
torch.compile, activation checkpointing, DDP under NCCL with a resume, the trainer's resume on
the device, and uint8 batches normalized on the device.

Marked `cuda` and skipped without a CUDA device. tools/gpu_check.sh runs them on a GPU machine;
its dry run (--device cpu) sets UNIMASK_GPU_CHECK_DEVICE=cpu and runs them on the CPU at small
sizes (gloo instead of NCCL), apart from the ones that mean something on a GPU only. The last
test, not marked cuda, runs that dry run.
"""
import copy
import os
import socket
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, read_metrics, tiny_image_model
from unimask.data import to_device
from unimask.optim import make_optimizer
from unimask.train.precision import autocast, resolve_precision

DEVICE = torch.device(os.environ.get("UNIMASK_GPU_CHECK_DEVICE", "cuda"))
ON_GPU = DEVICE.type == "cuda"
no_device = pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                               reason="no CUDA device (UNIMASK_GPU_CHECK_DEVICE=cpu: the CPU dry run)")
gpu_only = pytest.mark.skipif(not ON_GPU, reason="means something on a GPU only")


def check(test):
    """A GPU check: marked cuda (tools/gpu_check.sh selects them with -m cuda), skipped without one."""
    return pytest.mark.cuda(no_device(test))


FUSED_SDPA = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention")


def model_and_batch(img_size=32, patch=8, dim=128, batch=8, seed=0, ratio=0.75):
    """A tiny MAE (2 heads, of 64 at dim 128 as ViT-B's) on DEVICE and a batch for it."""
    torch.manual_seed(seed)
    model = tiny_image_model(img_size=img_size, patch=patch, dim=dim, ratio=ratio).to(DEVICE)
    images = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    return model, {"image": images.to(DEVICE)}


def loss_of(model, batch, precision="fp32", seed=0):
    generator = torch.Generator().manual_seed(seed)  # on the CPU, as the trainer's mask generator
    with autocast(precision, DEVICE):
        return model(batch, generator=generator)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*cmds, timeout=240):
    """Run python commands side by side -> the output of the last; each must exit 0."""
    procs = [subprocess.Popen([sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS="1")) for cmd in cmds]
    outputs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-6000:]
    return outputs[-1]


@check
def test_bf16_autocast_trains_a_step():
    if ON_GPU:
        assert resolve_precision("auto", DEVICE) == "bf16", torch.cuda.get_device_name()
    model, batch = model_and_batch()
    out = loss_of(model, batch, "bf16")
    assert out.pred.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@check
def test_fused_adamw_is_used_and_steps_as_the_plain_one():
    model, batch = model_and_batch()
    plain = copy.deepcopy(model)
    fused = make_optimizer(model, 1e-3, 0.05, (0.9, 0.95), DEVICE)
    assert all(group["fused"] for group in fused.param_groups)
    reference = torch.optim.AdamW([{**g, "params": [p for p, q in zip(plain.parameters(), model.parameters())
                                                     if any(q is r for r in g["params"])]}
                                   for g in fused.param_groups], foreach=False, fused=False)
    for net, optimizer in ((model, fused), (plain, reference)):
        loss_of(net, batch).loss.backward()
        optimizer.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def sdpa_ops(model, batch, precision) -> set:
    """The aten attention ops a forward + backward runs (which SDPA kernel was chosen)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss_of(model, batch, precision).loss.backward()
    return {event.key for event in prof.key_averages() if "scaled_dot_product" in event.key}


@check
def test_attention_runs_the_fused_sdpa_kernel():
    """On a GPU, bf16 attention must run flash / memory-efficient (or cuDNN) attention, never the
    math fallback. On a CPU: the project's choice, matmul + softmax below 192 tokens, SDPA's
    flash kernel above (unimask/transformer.py)."""
    model, batch = model_and_batch(img_size=64, patch=4)  # 256 patches, 64 visible
    ops = sdpa_ops(model, batch, "bf16")
    if ON_GPU:
        assert any(op in ops for op in FUSED_SDPA) and "aten::_scaled_dot_product_attention_math" not in ops, ops
        print("SDPA kernels:", sorted(ops))
        return
    assert "aten::_scaled_dot_product_attention_math" in ops, ops  # 64 visible tokens: the math path
    model, batch = model_and_batch(img_size=128, patch=4, dim=64, batch=1)  # 1024 patches, 256 visible
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in sdpa_ops(model, batch, "bf16")


@check
@gpu_only
def test_compile_matches_eager():
    from unimask.train.compile import compile_stacks

    torch.backends.cuda.matmul.allow_tf32 = False
    model, batch = model_and_batch()
    compiled = copy.deepcopy(model)
    assert compile_stacks(compiled) > 0
    eager, fast = loss_of(model, batch), loss_of(compiled, batch)
    torch.testing.assert_close(fast.loss, eager.loss, rtol=1e-4, atol=1e-5)
    fast.loss.backward()
    eager.loss.backward()
    for a, b in zip(compiled.parameters(), model.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)


@check
def test_activation_checkpointing_same_gradients_less_memory():
    from unimask.transformer import set_activation_checkpointing

    size = dict(img_size=224, patch=16, dim=384, batch=64, ratio=0.25) if ON_GPU else {}  # activations dominate
    model, batch = model_and_batch(**size)
    recomputed = copy.deepcopy(model)
    assert set_activation_checkpointing(recomputed, True) > 0
    peaks = []  # the peak of each forward + backward above what was allocated before it
    for net in (model, recomputed):
        if ON_GPU:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        out = loss_of(net, batch)
        out.loss.backward()
        peaks.append(torch.cuda.max_memory_allocated() - before if ON_GPU else 0)
        net.loss = out.loss.item()
    assert model.loss == recomputed.loss
    for a, b in zip(recomputed.parameters(), model.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    if ON_GPU:
        print(f"peak memory: {peaks[0] / 2**20:.0f} MiB plain, {peaks[1] / 2**20:.0f} MiB recomputing")
        assert peaks[1] < 0.8 * peaks[0], peaks


DDP_SCRIPT = '''
import os, sys
import torch, torch.distributed as dist
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from helpers import tiny_image_model
from unimask.optim import make_optimizer

device = torch.device(sys.argv[2])
if device.type == "cuda":
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda", torch.cuda.current_device())
dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
print("backend", dist.get_backend(), "world", dist.get_world_size())
images = torch.randn(6, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))

def build(state=None):
    torch.manual_seed(0)
    net = tiny_image_model(img_size=32, patch=8, dim=64).to(device)
    model = torch.nn.parallel.DistributedDataParallel(  # as unimask/train/trainer.py wraps it
        net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    optimizer = make_optimizer(net, 1e-3, 0.05, (0.9, 0.95), device)
    if state:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return net, model, optimizer

def steps(model, optimizer, first, last):
    for step in range(first, last):
        generator = torch.Generator().manual_seed(step)  # on the CPU, as the trainer's
        model({"image": images[step].to(device)}, generator=generator).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

net, model, optimizer = build()
steps(model, optimizer, 0, 6)
path = os.path.join(sys.argv[3], "half.pt")
half_net, half, half_opt = build()
steps(half, half_opt, 0, 3)
torch.save({"model": half_net.state_dict(), "optimizer": half_opt.state_dict()}, path)
resumed_net, resumed, resumed_opt = build(torch.load(path, map_location=device))
steps(resumed, resumed_opt, 3, 6)
# the key bias (part of qkv.bias) has a zero true gradient: AdamW scales its rounding noise, which
# GPU kernels' atomics vary, to steps near lr; every other weight must agree
gap = max(float((a - b).abs().max()) for (name, a), b in zip(net.named_parameters(), resumed_net.parameters())
          if not name.endswith("qkv.bias"))
print(f"resumed vs uninterrupted: largest weight difference {gap:.2e}")
assert gap < 1e-5, gap
dist.destroy_process_group()
'''


@check
def test_ddp_under_nccl_resumes(tmp_path):
    """One process under torchrun: NCCL on the GPU (gloo on the CPU), the DDP wrapper the trainer
    builds, fused AdamW, a checkpoint at step 3 resumed to step 6 = 6 uninterrupted steps."""
    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    out = run(["-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port()), str(script),
               ROOT, DEVICE.type, str(tmp_path)])
    assert f"backend {'nccl' if ON_GPU else 'gloo'} world 1" in out, out[-2000:]
    print(out.strip().splitlines()[-1])


@check
def test_trainer_resumes_on_the_device_with_uint8_batches(tmp_path):
    """The trainer on DEVICE (pinned memory, non-blocking copies), ImageDataset.output='uint8'
    normalized by the adapter on the device: 3 steps, a resume to 6 = 6 steps straight. (One
    process: the trainer joins a process group only at WORLD_SIZE > 1, hence the DDP test above.)"""
    recipe = ["tools/train.py", "--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin"]
    params = ["train.progress_bar=False", "ImageDataset.output='uint8'", "train.steps=6", "train.ckpt_every=3",
              "train.eval_every=1000", f"train.device='{DEVICE.type}'",
              f"train.num_workers={1 if ON_GPU else 0}", "train.precision='fp32'"]  # bf16: the test above
    bind = lambda extra: sum((["--gin_param", p] for p in params + extra), [])  # noqa: E731
    run([*recipe, "--workdir", str(tmp_path / "straight"), *bind([])],
        [*recipe, "--workdir", str(tmp_path / "resumed"), *bind(["train.stop_at=3"])])
    out = run([*recipe, "--workdir", str(tmp_path / "resumed"), "--resume", *bind([])])
    assert "resumed from" in out, out[-2000:]
    straight = [row["loss"] for row in read_metrics(str(tmp_path / "straight"))]
    resumed = [row["loss"] for row in read_metrics(str(tmp_path / "resumed"))]
    assert straight and len(straight) == len(resumed), (straight, resumed)
    tolerance = 1e-3 if ON_GPU else 1e-4  # GPU attention backward kernels accumulate with atomics
    assert all(abs(a - b) <= tolerance * max(1.0, abs(a)) for a, b in zip(straight, resumed)), (straight, resumed)


@check
def test_uint8_batches_are_normalized_on_the_device():
    from modalities.image import ImageAdapter, ImageDataset

    root = os.path.join(ROOT, "data", "sample", "images", "folder")
    raw, floats = ImageDataset(root=root, img_size=32, output="uint8"), ImageDataset(root=root, img_size=32)
    keys = [(i, 100 + i) for i in range(8)]
    loader = torch.utils.data.DataLoader(raw, batch_size=8, sampler=keys, pin_memory=ON_GPU, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.uint8 and batch["image"].is_pinned() == ON_GPU
    on_device = to_device(batch, DEVICE, non_blocking=True)["image"]
    adapter = ImageAdapter(img_size=32, patch_size=8, dim=16).to(DEVICE)
    normalized = adapter.normalize(on_device)
    assert normalized.device.type == DEVICE.type and normalized.dtype == torch.float32
    expected = torch.stack([floats[key]["image"] for key in keys])
    torch.testing.assert_close(normalized.cpu(), expected, rtol=0, atol=1e-5)
    tokens = adapter.tokenize({"image": on_device})
    assert tokens.patches.dtype == torch.float32 and tokens.patches.device.type == DEVICE.type


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step_on_the_cpu():
    """tools/gpu_check.sh --device cpu: each step passes (or is skipped with its reason), within a minute."""
    result = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--device", "cpu"], cwd=ROOT,
                            capture_output=True, text=True, timeout=150, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout[result.stdout.index("== summary"):].splitlines()[1:]
    steps = {line.split()[1].rstrip(":"): line.split()[0] for line in summary}
    assert {name: steps.get(name) for name in ("env", "install", "imports", "tests")} == dict.fromkeys(
        ("env", "install", "imports", "tests"), "PASS"), summary
