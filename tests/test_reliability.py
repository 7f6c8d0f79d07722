"""Failure paths as users meet them: the CLI as a subprocess, DataLoader workers on, a timeout.

Every run here must end by itself: a hang fails the test through its timeout, and each
failing run must exit non-zero with an error that names the file or the gin binding.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import RECIPE, ROOT, TIMEOUT_S, WORKERS, cli, read_metrics, train_cli, write_pngs
from unimask.train import checkpoint as ckpt

# ---- 1. a failing run exits, workers or not --------------------------------------------------
def test_corrupt_file_read_by_a_worker_ends_the_run(tmp_path):
    """The defect: the traceback printed, then the process never exited (workers ignore SIGTERM
    and multiprocessing joined them without a timeout at exit)."""
    data = tmp_path / "images"
    write_pngs(str(data), [f"a{i}.png" for i in range(6)])
    (data / "zz_bad.png").write_bytes(b"\x89PNG but not really")  # last in order: not in the first batch
    code, out, _ = train_cli(tmp_path / "run", f"ImageDataset.root='{data}'", "train.steps=10")
    assert code != 0, out
    assert "zz_bad.png" in out and "Traceback" in out
    message = [line for line in out.splitlines() if "zz_bad.png" in line][-1]
    assert message.count("zz_bad.png") == 1, message  # the path is named once, not twice


@pytest.mark.parametrize("binding, named", [
    ("ConstantRatio.ratio=1.5", "ConstantRatio.ratio=1.5"),
    ("ImageAdapter.patch_size=5", "ImageAdapter.img_size=32 is not divisible by ImageAdapter.patch_size=5"),
    ("LinearRatio.end=1.2", "LinearRatio.end=1.2"),
])
def test_bad_settings_fail_at_build_naming_the_binding(tmp_path, binding, named):
    params = [binding] + (["MaskedModel.schedule=@LinearRatio()"] if binding.startswith("LinearRatio") else [])
    code, out, _ = train_cli(tmp_path / "run", *params)
    assert code != 0 and named in out, out
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")  # before the first step


def test_short_clip_and_only_bad_files_fail_before_training(tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    shutil.copy(os.path.join(ROOT, "data", "sample", "video", "clips", "bikes.mp4"), short / "clip.mp4")
    code, out, _ = cli(["tools/train.py", "--gin", "gin/video_mae_cpu.gin", "--gin", "gin/smoke.gin",
                        "--workdir", str(tmp_path / "video")],
                       WORKERS + [f"VideoDataset.root='{short}'", "VideoDataset.sampling_rate=40"])
    assert code != 0 and "clip.mp4" in out and "shorter than the sampling window" in out, out[-3000:]
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.png").write_bytes(b"junk")
    code, out, _ = train_cli(tmp_path / "skip", f"ImageDataset.root='{bad}'", "ImageDataset.skip_bad_samples=True")
    assert code != 0 and "3 consecutive bad samples" in out, out[-3000:]


def test_failing_rank_stops_every_rank(tmp_path):
    """torchrun, 2 processes, workers on: the rank that reads the corrupt file fails, the other
    waits in a collective; both must end and torchrun must report the failure."""
    data = tmp_path / "images"
    write_pngs(str(data), ["a_good.png"])
    (data / "b_bad.png").write_bytes(b"junk")  # with batch 2 on 2 ranks one of them reads it at step 0
    code, out, _ = cli(["--nproc_per_node", "2", "--master_port", "29541", "tools/train.py", *RECIPE,
                        "--workdir", str(tmp_path / "run")],
                       WORKERS + [f"ImageDataset.root='{data}'", "train.batch_size=2", "train.steps=5"],
                       module="torch.distributed.run")
    assert code != 0, out[-3000:]
    assert "b_bad.png" in out


def test_sigkill_then_resume_loses_at_most_ckpt_every_steps_and_matches(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    params = ["train.steps=12", "train.ckpt_every=3", "ImageDataset.augment=False"]
    assert train_cli(straight, *params)[0] == 0
    cmd = [sys.executable, "tools/train.py", *RECIPE, "--workdir", str(killed)]
    cmd += sum((["--gin_param", p] for p in WORKERS + params + ["train.stop_at=100000"]), [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 7):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: what the checkpoint holds is all there is
    proc.wait(timeout=30)
    reached = len(metrics.read_text().splitlines())
    saved = ckpt.load_checkpoint(str(killed / "checkpoints" / "last.pt"))["step"]
    assert reached - 3 <= saved <= reached and saved % 3 == 0
    code, out, _ = train_cli(killed, *params, extra=["--resume"])
    assert code == 0, out[-3000:]
    assert f"at step {saved}" in out
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = {r["step"]: r["loss"] for r in read_metrics(str(straight))}
    assert all(losses[r["step"]] == r["loss"] for r in read_metrics(str(killed))[-(12 - saved):])


# ---- 5. the checkpoint fallback stays loadable ------------------------------------------------
def test_resume_from_prev_keeps_a_loadable_fallback(tmp_path):
    workdir = tmp_path / "run"
    params = ["train.num_workers=0", "train.steps=4", "train.ckpt_every=2"]
    assert train_cli(workdir, *params)[0] == 0
    folder = workdir / "checkpoints"
    last = folder / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a kill during a copy, a full disk
    code, out, _ = train_cli(workdir, "train.num_workers=0", "train.steps=8", "train.ckpt_every=2", extra=["--resume"])
    assert code == 0, out[-3000:]
    assert f"resumed from {folder / 'prev.pt'} at step 2" in out
    assert ckpt.load_checkpoint(str(folder / "last.pt"))["step"] == 8
    assert ckpt.load_checkpoint(str(folder / "prev.pt"))["step"] == 6


def test_damaged_last_checkpoint_is_not_rotated_into_prev(tmp_path):
    folder = str(tmp_path)
    ckpt.save_checkpoint({"step": 1}, folder, 1)
    ckpt.save_checkpoint({"step": 2}, folder, 2)
    with open(os.path.join(folder, "last.pt"), "r+b") as f:
        f.truncate(40)
    with pytest.warns(UserWarning, match="damaged"):
        ckpt.save_checkpoint({"step": 3}, folder, 3)
    assert ckpt.load_checkpoint(os.path.join(folder, "prev.pt"))["step"] == 1  # the last good one
    assert ckpt.load_checkpoint(os.path.join(folder, "last.pt"))["step"] == 3


# ---- skips are counted, for every file-based dataset -------------------------------------------
def skip_run(tmp_path, recipe, root_binding, data, *params):
    workdir = tmp_path / "run"
    code, out, _ = cli(["tools/train.py", "--gin", recipe, "--gin", "gin/smoke.gin", "--workdir", str(workdir)],
                       WORKERS + [f"{root_binding}='{data}'", root_binding.replace(".root", ".skip_bad_samples=True"),
                                  "train.steps=6", *params])
    assert code == 0, out[-3000:]
    return read_metrics(str(workdir))[-1]["bad_samples"]


@pytest.mark.slow  # ~27 s: README's suite stays under 15 minutes; .ci/run runs it
def test_skipped_samples_are_counted_with_workers(tmp_path):
    images = tmp_path / "images"
    write_pngs(str(images), [f"a{i}.png" for i in range(3)])
    (images / "b_bad.png").write_bytes(b"junk")
    assert skip_run(tmp_path / "i", "gin/image_mae_cpu.gin", "ImageDataset.root", images) > 0
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(os.path.join(ROOT, "data", "sample", "video", "clips", "bikes.mp4"), clips / "a.mp4")
    (clips / "b_bad.mp4").write_bytes(b"\x00" * 500)
    assert skip_run(tmp_path / "v", "gin/video_mae_cpu.gin", "VideoDataset.root", clips) > 0
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    for i in range(3):
        np.savetxt(clouds / f"a{i}.xyz", np.random.default_rng(i).normal(size=(300, 3)))
    (clouds / "b_bad.ply").write_text("ply\nformat ascii 1.0\nelement vertex 10\nproperty float x\nend_header\n1\n")
    assert skip_run(tmp_path / "p", "gin/point_mae.gin", "PointCloudDataset.root", clouds) > 0


# ---- 7. quiet decoders ----------------------------------------------------------------------------
def test_damaged_video_decodes_without_ffmpeg_noise(tmp_path):
    data = bytearray(open(os.path.join(ROOT, "data", "sample", "video", "clips", "bikes.mp4"), "rb").read())
    rng = np.random.default_rng(1)
    for j in rng.integers(2000, 35000, 300):  # flip bytes inside the frame data, keep the header
        data[j] = int(rng.integers(256))
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    script = ("import numpy as np; from modalities.video import VideoReader\n"
              "for backend in ('decord', 'av'):\n"
              "    try:\n"
              f"        r = VideoReader({str(path)!r}, backend); r.get(np.arange(len(r)))\n"
              "    except Exception as err:\n"
              "        print('error', backend)\n")
    quiet = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "[h264 @" not in quiet.stderr, quiet.stderr[-2000:]
    loud = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, UNIMASK_VERBOSE_DECODE="1"))
    assert "[h264 @" in loud.stderr  # the switch for debugging a decoder
