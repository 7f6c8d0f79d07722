#!/usr/bin/env python
"""Numbers for the results table (docs/report.md, summarized in README): pretrain on a CPU-time budget, then probe.

python tools/report.py images [--minutes 12]       # MAE on the Fashion-MNIST sample
python tools/report.py images-full                  # all of Fashion-MNIST (make_sample_data.py fashion-full)
python tools/report.py video | points | point2vec | graphs | audio   # VideoMAE (shuffle probe), Point-MAE,
                                                              # Point2Vec-style, GraphMAE, AudioMAE
python tools/report.py sweep [--minutes 3] [--on images-full]   # linear probe vs mask ratio (MAE Fig. 5)
python tools/report.py video --probe-only [--gin_param ...]   # probe an earlier run again
python tools/report.py points3d --minutes 10 --seeds 0 1 2   # three pretraining seeds: means and spread
python tools/report.py points3d-10shot --steps 5000 --episodes 5   # few-shot: five draws of the shots
python tools/report.py points3d-unlabeled-finetune --steps 5000 --finetune-seeds 0 1 2   # 3 fine-tunes per init

Each row is one Spec in tools/report_specs.py: the recipe, the data it needs and the probe. The shared pipeline (1) measures the CPU time of a
few training steps, (2) sets train.steps so the whole warmup + cosine schedule fits the budget
(`--minutes` x cores CPU-minutes: about `--minutes` of wall clock on a dedicated machine, more
on a shared one, same work either way), (3) pretrains in a child process (SIGTERM at 2x the
CPU budget: the trainer checkpoints and exits), (4) probes random
init, pretrained and raw input with tools/eval.py, (5) upserts the row of docs/report.md and
writes the JSON next to the run. A modality without labels probes through its dataset's
bindings in Spec.eval_params (video: VideoDataset.probe, frames in order vs shuffled).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402

REPORT_MD = os.path.join(ROOT, "docs", "report.md")
RUNS = os.path.join("runs", "report")
QUIET = ["train.progress_bar=False", "train.log_every=25"]
TABLE_HEADER = ["Modality", "Data", "Recipe", "Pretraining", "Probe", "Random init", "Pretrained", "Gain",
                "Raw input", "Noise (1 s.e., test n)"]
OVERRUN = 2.0  # x the CPU budget: past this a run is stopped (SIGTERM); contention inflates CPU per step
WALL_CAP = 4.0  # x the budget in wall minutes: the same, for a machine too busy to finish
SWEEP_HEADER = ["Mask ratio", "Steps", "CPU-min", "Linear probe", "Random init"]


from finetune_records import finetune_stamp, finished_finetune, save_finetune  # noqa: E402
from report_specs import SPECS, Spec  # noqa: E402


# ---- timing -------------------------------------------------------------------------------
# The budget is CPU time: `--minutes M` buys M minutes of every core of this machine. On a
# dedicated machine that is about M minutes of wall clock; on a shared one the run takes
# longer but does the same work, so its number does not depend on what else was running.
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


def train_command(spec: Spec, workdir: str, params: List[str]) -> List[str]:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--workdir", workdir]
    for path in spec.recipe:
        cmd += ["--gin", path]
    for param in QUIET + spec.params + params:
        cmd += ["--gin_param", param]
    return cmd


def count_rows(workdir: str) -> int:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def run_training(spec: Spec, workdir: str, params: List[str], cpu_limit_s: Optional[float] = None,
                 wall_limit_s: Optional[float] = None) -> dict:
    """Train in a child process, polling its CPU time; SIGTERM past a CPU or wall limit (the
    trainer checkpoints and exits 0). -> {'wall_s', 'cpu_s', 'terminated', 'row_cpu': [(rows
    written, CPU s) at each new metrics row]}; the child's output goes to <workdir>/train.log."""
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run: metrics.jsonl appends otherwise
    os.makedirs(workdir)
    cpu0, t0 = child_cpu_seconds(), time.perf_counter()
    row_cpu, terminated = [], False
    with open(os.path.join(workdir, "train.log"), "w") as log:
        proc = subprocess.Popen(train_command(spec, workdir, params), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
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


def read_rows(workdir: str) -> list:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def time_steps(spec: Spec, workdir: str, params: List[str], probe_steps: int = 40, every: int = 5) -> tuple:
    """Train `probe_steps` steps with a metrics row every `every` -> (CPU seconds per step in
    steady state, start-up CPU seconds: imports, data, workers, the final eval and checkpoint).
    Steady state runs from the first row to the one before the last (which waits for the eval)."""
    timing = run_training(spec, workdir, params + [f"train.steps={probe_steps}", f"train.log_every={every}",
                                                   "train.eval_every=1000000", "train.ckpt_every=1000000"])
    marks = [(rows, cpu) for rows, cpu in timing["row_cpu"] if rows < probe_steps // every]
    if len(marks) < 2 or marks[-1][0] == marks[0][0]:
        raise RuntimeError(f"could not time training steps (rows seen: {timing['row_cpu']})")
    per_step = (marks[-1][1] - marks[0][1]) / ((marks[-1][0] - marks[0][0]) * every)
    return per_step, max(0.0, timing["cpu_s"] - probe_steps * per_step)


def steps_for(budget_s: float, per_step_s: float, startup_s: float = 0.0, overhead: float = 0.03,
              minimum: int = 20) -> int:
    """Steps that fit the budget after start-up, leaving `overhead` for periodic evals and checkpoints."""
    return max(minimum, int((budget_s - startup_s) * (1 - overhead) / per_step_s))


def cpu_budget(minutes: float) -> float:
    return minutes * 60 * (os.cpu_count() or 1)


def pretrain(spec: Spec, minutes: float, workdir: str, params: List[str] = (), steps: Optional[int] = None) -> dict:
    """Pretrain on a CPU budget of `minutes` x all cores, or for exactly `steps` steps (the same
    schedule on any CPU, so the figure reproduces where a CPU budget would buy other steps);
    -> timing and step facts of the run."""
    params = list(params)
    budget, fixed = cpu_budget(minutes), steps is not None
    if fixed:  # a fixed schedule runs to its end: no budget to stop it
        per_step, caps, why = None, {}, "fixed"
    else:
        per_step, startup = time_steps(spec, workdir + "_speed", params)
        steps = steps_for(budget, per_step, startup)
        caps = {"cpu_limit_s": OVERRUN * budget, "wall_limit_s": WALL_CAP * minutes * 60 + 120}
        why = (f"{per_step:.2f} CPU-s/step + {startup:.0f} CPU-s start-up, for {budget / 60:.0f} CPU-min "
               f"({minutes:g} min x {os.cpu_count()} cores)")
    warmup = max(1, round(0.05 * steps))
    print(f"[{spec.key}] {steps} steps ({warmup} warmup): {why}", flush=True)
    timing = run_training(spec, workdir, params + [f"train.steps={steps}", f"train.warmup_steps={warmup}"], **caps)
    rows = read_rows(workdir)
    done = rows[-1]["step"]
    print(f"[{spec.key}] trained {done}/{steps} steps in {timing['wall_s'] / 60:.1f} min wall, "
          f"{timing['cpu_s'] / 60:.1f} CPU-min, final loss {rows[-1]['loss']:.4f}", flush=True)
    try:
        import plot
        plot.plot_metrics(plot.read_rows(workdir), os.path.join(workdir, "curves.png"), title=spec.key)
    except Exception as err:  # curves are a convenience, never a reason to lose the numbers
        print(f"[{spec.key}] no curves: {err}")
    return {"steps": done, "planned_steps": steps, "cpu_s_per_step": per_step, "wall_min": timing["wall_s"] / 60,
            "cpu_min": timing["cpu_s"] / 60, "budget_cpu_min": None if fixed else budget / 60,
            "fixed_steps": fixed, "cores": os.cpu_count(),
            "load_avg_1min_after": os.getloadavg()[0], "terminated": timing["terminated"],
            "final_loss": rows[-1]["loss"], "final_eval_loss": rows[-1].get("eval_loss"),
            "checkpoint": os.path.join(workdir, "checkpoints", "last.pt")}


# ---- probes -------------------------------------------------------------------------------
def load_eval():
    """tools/eval.py as a module (the name would shadow the builtin in a plain import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("unimask_eval_tool", os.path.join(ROOT, "tools", "eval.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def eval_probe(spec: Spec, checkpoint: str, random_init: bool = False, raw: bool = False, seed: int = 0) -> dict:
    args = ["--checkpoint", checkpoint, "--protocol", spec.protocol, "--seed", str(seed), *spec.eval_args]
    for param in spec.eval_params:
        args += ["--gin_param", param]
    if raw:
        args += ["--features", "raw"] + (["--pool", spec.raw_pool] if spec.raw_pool else [])
    else:
        # BatchNorm statistics of the probe's train split for every encoder, pretrained or not: an
        # untrained BatchNorm's mean 0 / variance 1 silence an untrained mini-PointNet (no-op without BN)
        args += ["--pool", spec.pool, "--norm-stats", "recompute"] + (["--random-init"] if random_init else [])
        args += ["--layer", str(spec.layer)] if spec.layer is not None else []
    evaluator = load_eval()
    try:
        return evaluator.evaluate(args)
    except ValueError as err:
        if raw and "flatten" in str(err):  # ragged tokens: average them instead
            return evaluator.evaluate(args + ["--pool", "mean"])
        raise


def finetune_all(spec: Spec, checkpoint: str, runs: str, key: Optional[str] = None, seed: int = 0) -> dict:
    """Fine-tune with spec.finetune from random init and from the checkpoint (same steps and
    seed); top-1 = the last eval_top1 on the test split. Raw: the linear probe on raw input.
    A row with several draws (spec.episodes > 1 draws of a few-shot row's shots, and/or
    spec.finetune_seeds: fine-tune seeds over this one checkpoint) does this per draw and gives
    their means, each draw's result under 'draws' and what varied under 'varied'."""
    seeds, draws = spec.finetune_seeds or [seed], []
    for e in range(spec.episodes):
        episode, raw = [f"{spec.episode_binding}={e}"] if spec.episode_binding else [], None
        for s in seeds:  # the raw probe depends on the episode only: once per episode
            draws.append(finetune_episode(spec, checkpoint, runs, (key or spec.key) + draw_suffix(e, s, seed), s,
                                          episode, raw))
            raw = draws[-1]["raw"]
    if len(draws) == 1:  # a plain row; one fine-tune seed other than the pretraining seed is named in it
        return dict(draws[0], **({"finetune_seed": seeds[0]} if seeds[0] != seed else {}))
    return dict(mean_probes(draws), draws=draws, varied={"episodes": spec.episodes, "finetune_seeds": seeds})


def draw_suffix(episode: int, finetune_seed: int, seed: int) -> str:
    """A draw's run name after the row's: _ep<e> past the first episode, _ft<s> for a fine-tune
    seed other than the pretraining seed ('' for the row's plain run)."""
    return (f"_ep{episode}" if episode else "") + (f"_ft{finetune_seed}" if finetune_seed != seed else "")


def finetune_episode(spec: Spec, checkpoint: str, runs: str, key: str, seed: int, episode: List[str],
                     raw: Optional[dict] = None) -> dict:
    """One fine-tune pair (random init, pretrained) and the raw linear probe (`raw` when it was
    already measured for this episode); `episode`: the bindings of one draw of a few-shot row's
    shots (empty otherwise). A fine-tune that already finished with the same stamp
    (finetune_stamp: command, recipes, code, data, checkpoint) is read back, not run again, so a
    row of many draws that was stopped resumes at its first unfinished fine-tune."""
    out = {}
    for name, init in (("random_init", "None"), ("pretrained", repr(checkpoint))):
        run = spec.copy()
        run.recipe, run.params = [spec.finetune], []
        workdir = os.path.join(runs, f"{key}_{name}")
        params = [f"train.init_from={init}", f"train.seed={seed}", *spec.finetune_params, *episode]
        stamp = finetune_stamp(train_command(run, workdir, params), run.recipe, run.needs, checkpoint)
        out[name] = finished_finetune(workdir, stamp)
        if out[name] is None:
            timing = run_training(run, workdir, params)
            scored = [row for row in read_rows(workdir) if "eval_top1" in row]
            out[name] = {"top1_acc": scored[-1]["eval_top1"], "steps": scored[-1]["step"],
                         "curve": [(row["step"], row["eval_top1"]) for row in scored],
                         "wall_min": timing["wall_s"] / 60, "cpu_min": timing["cpu_s"] / 60}
            save_finetune(workdir, stamp, out[name])
        else:
            print(f"[{key}] {name}: reusing the finished fine-tune in {workdir}", flush=True)
        print(f"[{key}] fine-tuned from {name}: top1_acc={out[name]['top1_acc']:.2f}", flush=True)
    if raw is None:
        linear = spec.copy()
        linear.protocol = "linear"
        linear.eval_params = list(spec.eval_params) + list(episode)
        raw = eval_probe(linear, checkpoint, raw=True)
        print(f"[{key}] raw: top1_acc={raw['top1_acc']:.2f}", flush=True)
    out["raw"] = raw
    return out


def probe_all(spec: Spec, checkpoint: str, seed: int = 0) -> dict:
    out = {}
    for name, kwargs in (("random_init", {"random_init": True}), ("pretrained", {}), ("raw", {"raw": True})):
        out[name] = eval_probe(spec, checkpoint, seed=seed, **kwargs)
        print(f"[{spec.key}] {name}: top1_acc={out[name]['top1_acc']:.2f}", flush=True)
    return out


# ---- docs/report.md -----------------------------------------------------------------------
def md_row(cells: List[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def upsert_row(text: str, table: str, header: List[str], cells: List[str]) -> str:
    """Replace the row whose first cell is cells[0] in the marked table (or append it); a
    missing table is created at the end. Other rows and all other text stay as they are."""
    start, end = f"<!-- table:{table} -->", f"<!-- /table:{table} -->"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{md_row(header)}\n{md_row(['---'] * len(header))}\n{end}\n"
    before, rest = text.split(start, 1)
    body, after = rest.split(end, 1)
    lines = [line for line in body.strip("\n").split("\n") if line.strip()]
    head, rows = lines[:2], lines[2:]
    key = re.escape(str(cells[0]))
    new = md_row(cells)
    for i, line in enumerate(rows):
        if re.match(rf"^\|\s*{key}\s*\|", line):
            rows[i] = new
            break
    else:
        rows.append(new)
    return f"{before}{start}\n" + "\n".join(head + rows) + f"\n{end}{after}"


def update_markdown(table: str, header: List[str], cells: List[str], path: str = REPORT_MD):
    """Upsert the row in `path`, and in README.md where it has the same marked table (README's
    "What pretraining buys" is a copy that stays in step)."""
    text = open(path).read() if os.path.exists(path) else "# What pretraining buys\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(upsert_row(text, table, header, cells))
    if os.path.abspath(path) != os.path.abspath(REPORT_MD):
        return
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    if f"<!-- table:{table} -->" in text:
        with open(readme, "w") as f:
            f.write(upsert_row(text, table, header, cells))


def load_json(path: str) -> dict:
    """The JSON file of results, or {} when there is none yet."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def save_json(path: str, key: str, value: dict):
    """Merge {key: value} into a JSON file of results."""
    data = load_json(path)
    data[key] = value
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def report_row(spec: Spec, run: dict, probes: dict) -> List[str]:
    random_acc, pre_acc = probes["random_init"]["top1_acc"], probes["pretrained"]["top1_acc"]
    recipe = " + ".join(f"`{r}`" for r in spec.recipe)
    fixed = " (fixed)" if run.get("fixed_steps") else ""
    time_cell = (f"{run['steps']} steps{fixed}, {run['cpu_min']:.1f} CPU-min ({run['wall_min']:.1f} min wall on "
                 f"{run['cores']} shared cores)")
    protocol = f"{spec.protocol}, {spec.pool}-pool" + (f", block {spec.layer}" if spec.layer is not None else "")
    if spec.finetune:
        protocol = f"fine-tune `{spec.finetune}`, {probes['pretrained']['steps']} steps; raw: linear"
    n_test = probes["raw"].get("n_test") or probes["pretrained"].get("n_test")
    noise = noise_cell(pre_acc, n_test)
    protocol += draws_note(probes) + (f"; fine-tune seed {probes['finetune_seed']}" if "finetune_seed" in probes else "")
    if probes.get("draws"):
        noise = spread_cell(noise, draws_word(probes["varied"]), probes["draws"])
    return [spec.key, spec.data, recipe, time_cell, protocol, f"{random_acc:.1f}",
            f"**{pre_acc:.1f}**", f"{pre_acc - random_acc:+.1f}", f"{probes['raw']['top1_acc']:.1f}", noise]


def spread_cell(noise: str, what: str, probe_sets: List[dict]) -> str:
    """The noise cell of a row averaged over several runs (pretraining seeds, few-shot episodes):
    the pretrained accuracies' sd, the standard error of the mean gain (each run's gain is paired:
    same seed or draw for both inits) and every run's accuracies."""
    pre, rnd = ([probes[which]["top1_acc"] for probes in probe_sets] for which in ("pretrained", "random_init"))
    gains = [p - r for p, r in zip(pre, rnd)]
    spread = statistics.stdev(pre) if len(pre) > 1 else float("nan")
    gain_se = statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else float("nan")
    return (f"{noise}; {what} sd {spread:.1f}, mean gain ±{gain_se:.1f} (pretrained "
            f"{' / '.join(f'{a:.1f}' for a in pre)}, random {' / '.join(f'{a:.1f}' for a in rnd)})")


def mean_probes(probe_sets: List[dict]) -> dict:
    """Several paired runs' probes (seeds, episodes) as one: each init's and the raw input's mean
    top-1, with the first run's steps and test size (the same in every run)."""
    def mean(which):
        first = probe_sets[0][which]
        return {"top1_acc": statistics.mean(probes[which]["top1_acc"] for probes in probe_sets),
                **{k: first[k] for k in ("steps", "n_test") if k in first}}
    return {which: mean(which) for which in ("random_init", "pretrained", "raw")}


def draws_word(varied: dict) -> str:
    """What a row's draws are: 'episodes', 'fine-tune seeds', or 'draws' when both vary."""
    many_episodes, many_seeds = varied["episodes"] > 1, len(varied["finetune_seeds"]) > 1
    return "draws" if many_episodes and many_seeds else "episodes" if many_episodes else "fine-tune seeds"


def draws_note(probes: dict) -> str:
    """The protocol cell's words for a fine-tune row averaged over draws ('' without draws)."""
    if not probes.get("draws"):
        return ""
    varied = probes["varied"]
    seeds = varied["finetune_seeds"]
    parts = ([f"{varied['episodes']} episodes (draws of the shots)"] if varied["episodes"] > 1 else []) + (
        [f"{len(seeds)} fine-tune seeds ({' '.join(map(str, seeds))})"] if len(seeds) > 1 else [])
    return f"; mean of {len(probes['draws'])} runs: {' x '.join(parts)}" if len(parts) > 1 else f"; mean of {parts[0]}"


def noise_cell(accuracy: float, n_test) -> str:
    """The binomial standard error of a test accuracy: what one test split's sampling alone moves it."""
    if not n_test:
        return "?"
    p = accuracy / 100
    return f"±{100 * math.sqrt(p * (1 - p) / n_test):.1f} (n={n_test})"


def seed_key(name: str, seed: int) -> str:
    """A run's name in runs/ and report.json: the row's own for seed 0, <row>_seed<k> otherwise."""
    return name if seed == 0 else f"{name}_seed{seed}"


def budget_args(minutes: float, steps: Optional[int]) -> str:
    """The command-line words of a run's budget: a fixed schedule or CPU minutes."""
    return f"--steps {steps}" if steps is not None else f"--minutes {minutes:g}"


def same_budget(result: dict, minutes: float, steps: Optional[int]) -> bool:
    """Was this earlier result pretrained with this budget (the same fixed steps, or the same CPU minutes)?"""
    if steps is not None:
        return bool(result["run"].get("fixed_steps")) and result["run"]["planned_steps"] == steps
    return not result["run"].get("fixed_steps") and result.get("minutes") == minutes


def with_draws(spec: Spec, episodes: Optional[int], finetune_seeds: Optional[List[int]]) -> Spec:
    """The row with --episodes / --finetune-seeds applied; a row they do not fit is refused here,
    before any pretraining, not after it."""
    if episodes is not None:
        if episodes < 1 or episodes > 1 and not (spec.episode_binding and spec.finetune):
            raise SystemExit(f"--episodes {episodes}: row {spec.key!r} " + (
                "takes at least 1" if episodes < 1 else "is not a few-shot fine-tune row (no episode_binding)"))
        spec.episodes = episodes
    if finetune_seeds is not None:
        if not spec.finetune:
            raise SystemExit(f"--finetune-seeds: row {spec.key!r} is not a fine-tune row (no finetune recipe)")
        if not finetune_seeds or len(set(finetune_seeds)) != len(finetune_seeds):
            raise SystemExit(f"--finetune-seeds {finetune_seeds}: give one or more different seeds")
        spec.finetune_seeds = list(finetune_seeds)
    return spec


def run_modality(name: str, minutes: float, runs: str, md_path: str, params: List[str] = (),
                 probe_only: bool = False, seed: int = 0, write_row: bool = True,
                 steps: Optional[int] = None, episodes: Optional[int] = None,
                 finetune_seeds: Optional[List[int]] = None) -> Optional[dict]:
    """Pretrain row `name` with train.seed=seed (runs/<name>, or runs/<name>_seed<k>), probe it
    with the same seed for the random init and the splits; write its row unless told not to.
    A row with `pretrained_by` reuses that row's run of the same seed and budget when
    report.json has one (a fine-tune row fine-tunes the checkpoint the linear probe read).
    episodes: how many draws of the shots a few-shot row averages (its Spec's number otherwise);
    finetune_seeds: the fine-tune seeds a fine-tune row averages over its one checkpoint."""
    spec = with_draws(SPECS[name].copy(), episodes, finetune_seeds)
    spec.params += list(params) + ([f"train.seed={seed}"] if seed else [])
    missing = [p for p in spec.required() if not os.path.exists(os.path.join(ROOT, p))]
    if missing:
        print(f"[{name}] skipped: {', '.join(missing)} not found. {spec.how}")
        return None
    key = seed_key(name, seed)
    workdir = os.path.join(runs, key)
    if probe_only:  # probe the checkpoint of an earlier run again; --gin_param then binds for the probes
        spec.eval_params += list(params)
        earlier = load_json(os.path.join(runs, "report.json"))[key]
        run, minutes = earlier["run"], earlier["minutes"]
        steps = earlier["run"]["planned_steps"] if earlier["run"].get("fixed_steps") else None
    else:
        source = (load_json(os.path.join(runs, "report.json")).get(seed_key(spec.pretrained_by, seed))
                  if spec.pretrained_by else None)
        if source and same_budget(source, minutes, steps) and os.path.exists(source["run"]["checkpoint"]):
            print(f"[{key}] reusing the pretraining run of {seed_key(spec.pretrained_by, seed)} (same budget)")
            run = source["run"]
        else:
            run = pretrain(spec, minutes, workdir, steps=steps)
    probes = (finetune_all(spec, run["checkpoint"], runs, key, seed) if spec.finetune
              else probe_all(spec, run["checkpoint"], seed))
    result = {"run": run, "probes": probes, "minutes": minutes, "seed": seed, "episodes": spec.episodes,
              "finetune_seeds": spec.finetune_seeds,
              "command": f"python tools/report.py {name} {budget_args(minutes, steps)}" + (f" --seeds {seed}" if seed else "")
              + (f" --episodes {episodes}" if episodes is not None else "")
              + (f" --finetune-seeds {' '.join(map(str, finetune_seeds))}" if finetune_seeds else "")}
    save_json(os.path.join(runs, "report.json"), key, result)
    if write_row:
        update_markdown("pretraining", TABLE_HEADER, report_row(spec, run, probes), md_path)
    print(f"[{key}] random init {probes['random_init']['top1_acc']:.2f}, pretrained "
          f"{probes['pretrained']['top1_acc']:.2f}, raw {probes['raw']['top1_acc']:.2f}; "
          f"wrote {md_path if write_row else ''} {os.path.join(runs, 'report.json')}")
    return result


def run_seeds(name: str, minutes: float, runs: str, md_path: str, params: List[str], seeds: List[int],
              probe_only: bool = False, steps: Optional[int] = None, episodes: Optional[int] = None,
              finetune_seeds: Optional[List[int]] = None) -> Optional[dict]:
    """The row over several pretraining seeds: each seed's run and probes (reusing a seed's earlier
    result in report.json when it has the same budget), then one row with the means and the
    seeds' spread next to the test-set standard error."""
    if finetune_seeds and len(seeds) > 1:  # every pretraining seed would fine-tune the same random inits
        raise SystemExit("--finetune-seeds with several --seeds: the random-init fine-tunes would repeat for "
                         "every pretraining seed; give one pretraining seed")
    earlier = load_json(os.path.join(runs, "report.json"))
    results = []
    wanted = with_draws(SPECS[name].copy(), episodes, finetune_seeds)
    for seed in seeds:
        key = seed_key(name, seed)
        done = earlier.get(key)
        same_draws = done and (done.get("episodes", 1), done.get("finetune_seeds")) == (wanted.episodes,
                                                                                        wanted.finetune_seeds)
        if same_draws and same_budget(done, minutes, steps) and not probe_only:
            print(f"[{key}] reusing the earlier run of the same budget in report.json")
            results.append(dict(done, probes=with_draws_key(done["probes"], done.get("episodes", 1), seed)))
            continue
        result = run_modality(name, minutes, runs, md_path, params, probe_only, seed=seed, write_row=False, steps=steps,
                              episodes=episodes, finetune_seeds=finetune_seeds)
        if result is None:
            return None
        results.append(result)
    spec = SPECS[name].copy()
    update_markdown("pretraining", TABLE_HEADER, seeds_row(spec, results), md_path)
    return {"seeds": seeds, "results": results}


def with_draws_key(probes: dict, episodes: int, seed: int) -> dict:
    """Probes as finetune_all gives them now: report.json written before fine-tune seeds kept a
    few-shot row's draws under 'episodes' (one fine-tune seed, the pretraining seed)."""
    if "episodes" not in probes or "draws" in probes:
        return probes
    probes = dict(probes, draws=probes["episodes"], varied={"episodes": episodes, "finetune_seeds": [seed]})
    del probes["episodes"]
    return probes


def seeds_row(spec: Spec, results: List[dict]) -> List[str]:
    """Row cells from several seeds: the means, and in the noise cell the pretrained accuracies'
    sd, the mean gain's standard error and every seed's figures (spread_cell); one seed: its own row."""
    if len(results) == 1:  # no seeds' spread to show (a fine-tune row's draws keep theirs)
        return report_row(spec, results[0]["run"], results[0]["probes"])
    probe_sets = [r["probes"] for r in results]
    cells = report_row(spec, results[0]["run"], mean_probes(probe_sets))
    steps = ", ".join(str(r["run"]["steps"]) for r in results)
    fixed = " (fixed)" if results[0]["run"].get("fixed_steps") else ""
    cells[3] = f"{len(results)} seeds, {steps} steps{fixed}, {results[0]['run']['cpu_min']:.1f} CPU-min each"
    cells[4] += draws_note(probe_sets[0])
    cells[-1] = spread_cell(cells[-1], "seeds", probe_sets)
    return cells


# ---- mask-ratio sweep ---------------------------------------------------------------------
def plot_sweep(ratios: List[float], accs: List[float], random_acc: float, out: str) -> str:
    """Linear-probe accuracy vs mask ratio, MAE Fig. 5 style, with the random-init level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.plot([100 * r for r in ratios], accs, marker="o", label="pretrained")
    for r, a in zip(ratios, accs):
        ax.annotate(f"{a:.1f}", (100 * r, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.axhline(random_acc, color="gray", linestyle="--", label=f"random init ({random_acc:.1f})")
    ax.set_xlabel("masking ratio (%)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_sweep(minutes: float, ratios: List[float], runs: str, md_path: str, params: List[str] = (),
              name: str = "images") -> dict:
    """Same number of steps for every ratio (timed at the lowest ratio, the slowest), so each
    point has seen the same data, as in MAE's Fig. 5."""
    spec = SPECS[name].copy()
    spec.params += list(params)
    base = os.path.join(runs, "sweep")
    per_step, startup = time_steps(spec, os.path.join(base, "speed"), [f"ConstantRatio.ratio={min(ratios)}"])
    steps = steps_for(cpu_budget(minutes), per_step, startup)
    warmup = max(1, round(0.05 * steps))
    print(f"[sweep] {per_step:.2f} CPU-s/step at ratio {min(ratios)} -> {steps} steps per ratio", flush=True)
    points = {}
    for ratio in ratios:
        workdir = os.path.join(base, f"ratio_{ratio}")
        timing = run_training(spec, workdir, [f"ConstantRatio.ratio={ratio}", f"train.steps={steps}",
                                              f"train.warmup_steps={warmup}"],
                              cpu_limit_s=OVERRUN * cpu_budget(minutes), wall_limit_s=WALL_CAP * minutes * 60 + 120)
        ckpt = os.path.join(workdir, "checkpoints", "last.pt")
        points[ratio] = {"top1_acc": eval_probe(spec, ckpt)["top1_acc"], "wall_min": timing["wall_s"] / 60,
                         "cpu_min": timing["cpu_s"] / 60, "steps": read_rows(workdir)[-1]["step"]}
        print(f"[sweep] ratio {ratio}: top1_acc={points[ratio]['top1_acc']:.2f}", flush=True)
    random_acc = eval_probe(spec, ckpt, random_init=True)["top1_acc"]
    png = plot_sweep(ratios, [points[r]["top1_acc"] for r in ratios], random_acc, os.path.join(base, "mask_ratio.png"))
    shutil.copy(png, os.path.join(os.path.dirname(md_path), "mask_ratio.png"))  # next to the tables, for the docs
    result = {"points": {str(r): v for r, v in points.items()}, "random_init": random_acc, "steps": steps,
              "data": spec.data, "png": png,
              "command": f"python tools/report.py sweep --minutes {minutes:g} --on {name}"}
    save_json(os.path.join(runs, "report.json"), "sweep", result)
    for ratio in ratios:
        update_markdown("sweep", SWEEP_HEADER, [f"{ratio:.2f}", points[ratio]["steps"], f"{points[ratio]['cpu_min']:.1f}",
                                                f"{points[ratio]['top1_acc']:.1f}", f"{random_acc:.1f}"], md_path)
    print(f"[sweep] wrote {png}, {md_path}")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=list(SPECS) + ["sweep", "all"])
    parser.add_argument("--minutes", type=float, default=None,
                        help="pretraining budget per run in minutes of all this machine's cores (CPU time = "
                             "minutes x cores): 12 per modality, 3 per sweep ratio")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--on", default="images", choices=["images", "images-full"],
                        help="data of the sweep: the 4k sample or all of Fashion-MNIST")
    parser.add_argument("--runs", default=RUNS, help="where runs and report.json go")
    parser.add_argument("--md", default=REPORT_MD, help="markdown file whose tables are updated")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretrain exactly this many steps instead of a CPU budget (5%% warmup): the same "
                             "schedule, so the same figure within noise, on any CPU")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="pretraining seeds (train.seed): one run each, the row shows their means and spread")
    parser.add_argument("--episodes", type=int, default=None,
                        help="few-shot rows: average this many draws of the shots (the row's default otherwise)")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=None,
                        help="fine-tune rows: fine-tune both inits once per seed over the one pretraining "
                             "checkpoint; the row shows the means and the seeds' spread")
    parser.add_argument("--probe-only", action="store_true",
                        help="no pretraining: probe the checkpoint of the earlier run in --runs again (a "
                             "fine-tune row reads back its finished fine-tunes and probes raw input again)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="extra binding for pretraining (kept in the checkpoint, so the probes see it too); "
                             "with --probe-only, for the probes")
    args = parser.parse_args(argv)
    args.runs, args.md = os.path.abspath(args.runs), os.path.abspath(args.md)
    os.chdir(ROOT)  # recipes and their data roots are relative to the repository
    if args.what == "sweep":
        run_sweep(args.minutes or 3, args.ratios, args.runs, args.md, args.gin_param, name=args.on)
        return 0
    for name in (list(SPECS) if args.what == "all" else [args.what]):
        # with `all`, --episodes reaches only the few-shot rows and --finetune-seeds only the fine-tune rows
        draws = {"episodes": args.episodes if args.what != "all" or SPECS[name].episode_binding else None,
                 "finetune_seeds": args.finetune_seeds if args.what != "all" or SPECS[name].finetune else None}
        if args.seeds:
            run_seeds(name, args.minutes or 12, args.runs, args.md, args.gin_param, args.seeds, args.probe_only,
                      steps=args.steps, **draws)
        else:
            run_modality(name, args.minutes or 12, args.runs, args.md, args.gin_param, args.probe_only,
                         steps=args.steps, **draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
