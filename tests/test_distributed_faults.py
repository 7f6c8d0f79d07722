"""Faults under torchrun (gloo on CPU) that must end cleanly, not hang or lose a checkpoint.

- SIGTERM reaching ONE rank: the stop is agreed in the per-step all-reduce, so both ranks save
  the same step and exit 0 (it used to hang: one rank in the checkpoint barrier, the other in
  the next step's gradient all-reduce, until the 30-minute gloo default).
- A step that fails on one rank (a save) raises on every rank, naming the failed rank.
- A damaged sharded checkpoint (truncated or bit-flipped `.distcp`) is not intact; loading
  falls back to prev.pt, `--resume` works, and publish never drops the good prev.pt.

Each test launches real processes with a timeout well below the collective timeout.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from helpers import ROOT, read_metrics
from test_distributed import BASE, IMAGE, bindings, free_port, torchrun
from unimask.train import checkpoint as ckpt
from unimask.train import sharded
from unimask.train.durable import atomic_save


def _kill_tree(proc):
    """End a launcher and its workers (a test that failed must not leave a hung job behind)."""
    try:
        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True) + [parent]:
            child.kill()
    except psutil.NoSuchProcess:
        pass
    proc.wait(timeout=30)


def _worker(launcher_pid: int, rank: int, timeout: float = 60) -> psutil.Process:
    """The torchrun worker process of `rank`: a direct child of the launcher with that RANK in its
    environment (its DataLoader workers, forked, have the same environment and command line)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in psutil.Process(launcher_pid).children():
            try:
                if child.environ().get("RANK") == str(rank) and "train.py" in " ".join(child.cmdline()):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} under torchrun pid {launcher_pid}")


def test_sigterm_to_one_rank_stops_both_at_the_same_step(tmp_path):
    workdir = tmp_path / "run"
    params = BASE + ["train.steps=100000", "train.ckpt_every=100000", "train.eval_every=100000",
                     "train.batch_size=4", "train.collective_timeout_s=120"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "tools/train.py", *IMAGE, "--workdir", str(workdir), *bindings(params)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        metrics, deadline = workdir / "metrics.jsonl", time.time() + 120
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
            assert proc.poll() is None, proc.communicate()[0][-5000:]
            time.sleep(0.2)
        _worker(proc.pid, rank=1).send_signal(signal.SIGTERM)  # rank 1 only: rank 0 never sees a signal
        sent = time.time()
        out = proc.communicate(timeout=60)[0]  # the old per-rank stop hung here (gloo: 30 min)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        raise AssertionError("the job did not end within 60 s of SIGTERM to one rank: hung in mismatched "
                             "collectives") from None
    except BaseException:
        _kill_tree(proc)
        raise
    assert proc.returncode == 0, out[-5000:]
    assert time.time() - sent < 60
    saved = [int(s) for s in re.findall(r"checkpoint saved at step (\d+), exiting", out)]
    assert len(saved) == 2 and saved[0] == saved[1], out[-3000:]  # both ranks, the same step
    assert "signal 15" in out and "a signal on another rank" in out
    state = ckpt.load_checkpoint(str(workdir / "checkpoints" / "last.pt"))
    assert state["step"] == saved[0] == read_metrics(str(workdir))[-1]["step"]


AGREE = r'''
"""Test-only: rank 0 fails inside all_or_none, then rank 1 goes missing from a collective."""
import os
import sys
import time

import torch
import torch.distributed as dist

from unimask.train.distributed import RankFailedError, all_or_none, init_distributed

info = init_distributed(torch.device("cpu"), timeout_s=3)
report = open(os.path.join(sys.argv[1], f"rank{info.rank}.txt"), "w")
try:
    with all_or_none("saving"):
        if info.rank == 0:
            raise OSError(28, "No space left on device")
    report.write("no error\n")
except RankFailedError as err:
    report.write(f"RankFailedError: {err}\n")
except OSError as err:
    report.write(f"OSError: {err}\n")
with all_or_none("nothing"):  # succeeds everywhere: a plain barrier, so both start the next part together
    pass
start = time.time()
if info.rank == 1:
    time.sleep(10)  # a stuck rank
else:
    try:
        dist.barrier()
        report.write("barrier passed\n")
    except Exception as err:
        report.write(f"{type(err).__name__} after {time.time() - start:.1f} s\n")
report.close()
os._exit(0)
'''


def test_a_failed_save_on_rank_0_raises_everywhere_and_collectives_time_out(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(free_port()), str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1",
                                                  PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = (tmp_path / "rank0.txt").read_text().splitlines(), (tmp_path / "rank1.txt").read_text().splitlines()
    assert rank0[0].startswith("OSError")  # its own error
    assert re.match(r"RankFailedError: saving failed on rank\(s\) \[0\]", rank1[0])
    # collective_timeout_s=3: the missing rank ends the wait in ~3 s, not when it exits (10 s) or at 30 min
    waited = re.match(r"\w+ after ([\d.]+) s", rank0[1])
    assert waited and float(waited.group(1)) < 8, rank0


# ---- sharded checkpoints ----------------------------------------------------------------------
FSDP = ["train.batch_size=4", "train.ckpt_every=2", "train.fsdp=True"]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """One 2-rank FSDP run saved at steps 2 and 4 (prev.pt and last.pt, sharded) and a step_4.pt
    snapshot; tests work on copies of it."""
    workdir = tmp_path_factory.mktemp("fsdp") / "run"
    torchrun(workdir, IMAGE, *FSDP, "train.steps=4", "train.keep_every=4")
    return workdir


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run" / "checkpoints"


def _shard(path):
    return sorted(glob.glob(os.path.join(path, "*.distcp")))[0]


def test_sharded_checkpoint_records_every_file(fsdp_run):
    folder = fsdp_run / "checkpoints"
    for name in ("last.pt", "prev.pt", "step_4.pt"):
        path = str(folder / name)
        recorded = sharded.load_meta(path)["shard_files"]
        assert set(recorded) == set(sharded.dcp_files(path)) and ".metadata" in recorded
        assert len([n for n in recorded if n.endswith(".distcp")]) == 2  # one per rank
        assert sharded.is_intact_sharded(path)
    assert sorted(os.listdir(folder)) == ["last.pt", "prev.pt", "step_4.pt"]  # no temp folder left
    assert ckpt.load_checkpoint(str(folder / "step_4.pt"))["step"] == 4


def test_truncated_shard_falls_back_to_prev_and_resumes(fsdp_run, tmp_path):
    folder = _copy(fsdp_run, tmp_path)
    last = str(folder / "last.pt")
    shard = _shard(last)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    assert not sharded.is_intact_sharded(last)
    with pytest.warns(UserWarning, match="resuming from .*prev.pt"):
        state, path = ckpt.find_latest(str(folder))
    assert path.endswith("prev.pt") and state["step"] == 2
    with pytest.warns(UserWarning, match="resuming from .*prev.pt"):  # what an FSDP resume reads
        assert ckpt.find_latest(str(folder), meta_only=True)[0]["step"] == 2
    # DCP's CheckpointException (a BaseException) comes out as an ordinary error naming the path
    with pytest.raises(sharded.ShardedCheckpointError, match=re.escape(last)):
        sharded.load_full(last)
    out = torchrun(tmp_path / "run", IMAGE, *FSDP, "train.steps=6", extra=["--resume"])
    assert "resumed from" in out and "prev.pt at step 2" in out
    assert ckpt.load_checkpoint(last)["step"] == 6 and ckpt.load_checkpoint(str(folder / "prev.pt"))["step"] == 4
    assert [r["step"] for r in read_metrics(str(tmp_path / "run"))][-4:] == [3, 4, 5, 6]


def test_flipped_bits_fail_the_checksum_and_old_checkpoints_still_count(fsdp_run, tmp_path):
    folder = _copy(fsdp_run, tmp_path)
    last = str(folder / "last.pt")
    shard = _shard(last)
    with open(shard, "r+b") as f:  # same size: only the checksum can tell
        f.seek(os.path.getsize(shard) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not sharded.is_intact_sharded(last)
    assert sharded.is_intact_sharded(last, checksums=False)  # the sizes still match
    prev = str(folder / "prev.pt")  # a checkpoint written before the record: judged as before
    meta = sharded.load_meta(prev)
    del meta["shard_files"]
    atomic_save(meta, os.path.join(prev, sharded.META))
    assert sharded.is_intact_sharded(prev) and ckpt.load_checkpoint(prev)["step"] == 2


def test_publish_never_drops_a_good_prev_for_a_damaged_last(fsdp_run, tmp_path):
    folder = _copy(fsdp_run, tmp_path)
    last, prev = str(folder / "last.pt"), str(folder / "prev.pt")
    shard = _shard(last)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 1)
    new = str(folder / "last.pt.tmp.9")
    shutil.copytree(str(folder / "step_4.pt"), new)
    with pytest.warns(UserWarning, match="damaged"):  # even when this process believes it wrote it
        ckpt.publish(new, str(folder), last_is_good=True)
    assert ckpt.load_checkpoint(prev)["step"] == 2 and sharded.is_intact_sharded(prev)
    assert sharded.is_intact_sharded(last) and ckpt.load_checkpoint(last)["step"] == 4
    assert torch.equal(ckpt.load_checkpoint(last)["model"]["encoder.norm.weight"],
                       ckpt.load_checkpoint(str(folder / "step_4.pt"))["model"]["encoder.norm.weight"])
