"""tools/slurm: SLURM variables -> torchrun arguments (launch_args.py), and train.sbatch's launch
and requeue path, run with stand-ins for srun, scontrol and torchrun (no SLURM here)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools", "slurm"))
from launch_args import SlurmEnvError, expand_nodelist, torchrun_args  # noqa: E402

SBATCH = os.path.join(ROOT, "tools", "slurm", "train.sbatch")
JOB = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
       "SLURM_GPUS_ON_NODE": "4", "SLURM_NTASKS_PER_NODE": "1"}


@pytest.mark.parametrize("nodelist, hosts", [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu5", ["gpu5"]),
    ("a1,b[8-10],c[007]", ["a1", "b8", "b9", "b10", "c007"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("x-[1-2].ib,y", ["x-1.ib", "x-2.ib", "y"]),
])
def test_nodelist_expands_as_scontrol_show_hostnames(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["node[01-03", "node[3-1]", "node[a-b]", "node[[1]]", "a,,b"])
def test_malformed_nodelist_is_named(nodelist):
    with pytest.raises(SlurmEnvError, match="SLURM_JOB_NODELIST"):
        expand_nodelist(nodelist)


def test_torchrun_arguments_from_the_job():
    args = torchrun_args(JOB)
    assert args == ["--nnodes", "2", "--nproc-per-node", "4", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", "node01:21234", "--rdzv-id", "1234"]
    cpu = {k: v for k, v in JOB.items() if k != "SLURM_GPUS_ON_NODE"}
    assert torchrun_args(cpu)[3] == "1" and torchrun_args(cpu, nproc_per_node=3)[3] == "3"
    assert torchrun_args({**cpu, "SLURM_GPUS_PER_NODE": "a100:8"})[3] == "8"
    assert torchrun_args({**JOB, "MASTER_PORT": "29500"})[7] == "node01:29500"


@pytest.mark.parametrize("change, named", [
    ({"SLURM_JOB_ID": None}, "SLURM_JOB_ID"),
    ({"SLURM_NNODES": "3"}, "SLURM_NNODES=3"),
    ({"SLURM_NTASKS_PER_NODE": "4"}, "SLURM_NTASKS_PER_NODE=4"),
    ({"SLURM_GPUS_ON_NODE": "zero"}, "SLURM_GPUS_ON_NODE"),
])
def test_a_bad_job_environment_is_named(change, named):
    env = {k: v for k, v in {**JOB, **change}.items() if v is not None}
    with pytest.raises(SlurmEnvError, match=named):
        torchrun_args(env)


def test_the_cli_prints_arguments_or_names_the_problem():
    script = os.path.join(ROOT, "tools", "slurm", "launch_args.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run([sys.executable, script], env={**env, **JOB}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == torchrun_args(JOB)
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SLURM_JOB_NODELIST" in done.stderr


def test_sbatch_script_parses():
    assert subprocess.run(["bash", "-n", SBATCH], capture_output=True, timeout=30).returncode == 0


def stub(path, body: str):
    with open(path, "w") as f:
        f.write("#!/bin/bash\n" + body)
    os.chmod(path, 0o755)


def test_sbatch_launches_torchrun_and_requeues_on_the_warning_signal(tmp_path):
    """srun runs the per-node command (torchrun is a stand-in that records its arguments), then
    stands for the running job; SIGUSR1 to the script reaches it as SIGTERM, and the job is requeued."""
    out, bin_dir = tmp_path / "out", tmp_path / "bin"
    out.mkdir()
    bin_dir.mkdir()
    stub(bin_dir / "srun", f'echo "$@" > {out}/srun\nwhile [[ "$1" == --* ]]; do shift; done\n"$@"\n'
                           f'trap "echo term > {out}/term; exit 0" TERM\ntouch {out}/running\n'
                           'while true; do sleep 0.1; done\n')
    stub(bin_dir / "scontrol", f'echo "$@" > {out}/scontrol\n')
    stub(bin_dir / "python", f'if [ "$1" = -m ]; then echo "$@" > {out}/torchrun; exit 0; fi\n'
                             f'exec {sys.executable} "$@"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(JOB, PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python"), UNIMASK_ROOT=ROOT)
    job = subprocess.Popen(["bash", SBATCH, "--gin", "x.gin", "--workdir", "runs/x"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        while not (out / "running").exists() and time.time() < deadline and job.poll() is None:
            time.sleep(0.1)
        assert (out / "running").exists(), job.communicate(timeout=5)[0] if job.poll() is not None else "no start"
        job.send_signal(signal.SIGUSR1)
        log, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, log
    assert (out / "term").exists() and (out / "scontrol").read_text().split() == ["requeue", "1234"]
    assert "--ntasks-per-node=1" in (out / "srun").read_text()
    assert (out / "torchrun").read_text().split() == ["-m", "torch.distributed.run", *torchrun_args(JOB), "tools/train.py",
                                                      "--resume", "auto", "--gin", "x.gin", "--workdir", "runs/x"]


def test_sbatch_without_arguments_says_how_to_call_it():
    done = subprocess.run(["bash", SBATCH], capture_output=True, text=True, timeout=30, env={**os.environ, **JOB})
    assert done.returncode == 2 and "usage: sbatch tools/slurm/train.sbatch" in done.stderr


@pytest.mark.slow  # ~25 s: a real 2-process torchrun
def test_the_arguments_start_a_real_two_process_torchrun_job(tmp_path):
    """launch_args' output for a one-node, two-process job (localhost) drives torchrun's c10d
    rendezvous as it would on a cluster node: the run trains with world size 2."""
    import socket

    from unimask.train.checkpoint import load_checkpoint

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "1", "SLURM_GPUS_ON_NODE": "2",
           "MASTER_PORT": str(port)}
    workdir = tmp_path / "run"
    params = ["train.steps=2", "train.batch_size=4", "train.num_workers=0", "train.precision='fp32'",
              "train.progress_bar=False"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(job), "tools/train.py", "--gin",
           "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", str(workdir), "--resume", "auto",
           *sum((["--gin_param", p] for p in params), [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert load_checkpoint(str(workdir / "checkpoints" / "last.pt"))["world_size"] == 2
