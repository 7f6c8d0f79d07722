"""CPU-time budgets: how many steps fit, and a training run in a child process that keeps to it.

The budget is CPU time: `--minutes M` buys M minutes of every core of this machine. On a
dedicated machine that is about M minutes of wall clock; on a shared one the run takes longer
but does the same work, so its number does not depend on what else was running. A few steps are
timed first (step_cost), the schedule is sized to the budget (steps_for), and the run is stopped
with SIGTERM past a multiple of it (the trainer checkpoints and exits 0).
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time
from typing import List, Optional, Sequence, Tuple

OVERRUN = 2.0  # x the CPU budget: past this a run is stopped (SIGTERM); contention inflates CPU per step
WALL_CAP = 4.0  # x the budget in wall minutes: the same, for a machine too busy to finish


def cpu_budget(minutes: float) -> float:
    """CPU seconds of `minutes` on every core."""
    return minutes * 60 * (os.cpu_count() or 1)


def caps(minutes: float) -> dict:
    """run_training's limits for a run of this budget: OVERRUN x its CPU, WALL_CAP x its minutes."""
    return {"cpu_limit_s": OVERRUN * cpu_budget(minutes), "wall_limit_s": WALL_CAP * minutes * 60 + 120}


def steps_for(budget_s: float, per_step_s: float, startup_s: float = 0.0, overhead: float = 0.03,
              minimum: int = 20) -> int:
    """Steps that fit the budget after start-up, leaving `overhead` for periodic evals and checkpoints."""
    return max(minimum, int((budget_s - startup_s) * (1 - overhead) / per_step_s))


def warmup_for(steps: int) -> int:
    """5% warmup, at least one step."""
    return max(1, round(0.05 * steps))


def timing_params(probe_steps: int = 40, every: int = 5) -> List[str]:
    """Bindings of a timing run: `probe_steps` steps, a metrics row every `every`, no evals or checkpoints."""
    return [f"train.steps={probe_steps}", f"train.log_every={every}", "train.eval_every=1000000",
            "train.ckpt_every=1000000"]


def step_cost(timing: dict, probe_steps: int = 40, every: int = 5) -> Tuple[float, float]:
    """A timing run -> (CPU seconds per step in steady state, start-up CPU seconds: imports, data,
    workers, the final eval and checkpoint). Steady state runs from the first metrics row to the one
    before the last (which waits for the eval); timing['row_cpu'] holds (rows, CPU s) marks."""
    marks = [(rows, cpu) for rows, cpu in timing["row_cpu"] if rows < probe_steps // every]
    if len(marks) < 2 or marks[-1][0] == marks[0][0]:
        raise RuntimeError(f"could not time training steps (rows seen: {timing['row_cpu']})")
    per_step = (marks[-1][1] - marks[0][1]) / ((marks[-1][0] - marks[0][0]) * every)
    return per_step, max(0.0, timing["cpu_s"] - probe_steps * per_step)


# ---- a training child process ------------------------------------------------------------------
def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of a live process, its live descendants (data loader workers) and the
    children they already reaped, from /proc (Linux); 0 where /proc is missing."""
    tick, total, stack = os.sysconf("SC_CLK_TCK"), 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # from field 3 (state) on
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def count_rows(workdir: str) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def run_training(command: Sequence[str], workdir: str, cwd: str, cpu_limit_s: Optional[float] = None,
                 wall_limit_s: Optional[float] = None) -> dict:
    """Run a training command in a child process in a fresh `workdir`, polling its CPU time; SIGTERM
    past a CPU or wall limit. -> {'wall_s', 'cpu_s', 'terminated', 'row_cpu': [(rows written, CPU s)
    at each new metrics row]}; the child's output goes to <workdir>/train.log."""
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run: metrics.jsonl appends otherwise
    os.makedirs(workdir)
    cpu0, t0 = child_cpu_seconds(), time.perf_counter()
    row_cpu, terminated = [], False
    with open(os.path.join(workdir, "train.log"), "w") as log:
        proc = subprocess.Popen(list(command), cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(0.25)
            rows, cpu = count_rows(workdir), tree_cpu_seconds(proc.pid)
            if rows and (not row_cpu or rows != row_cpu[-1][0]):
                row_cpu.append((rows, cpu))
            over = (cpu_limit_s and cpu > cpu_limit_s) or (wall_limit_s and time.perf_counter() - t0 > wall_limit_s)
            if over and not terminated:
                terminated = True
                proc.send_signal(signal.SIGTERM)
    if proc.returncode != 0:
        with open(os.path.join(workdir, "train.log")) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"training failed (exit {proc.returncode}):\n{tail}")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": child_cpu_seconds() - cpu0, "terminated": terminated,
            "row_cpu": row_cpu}
