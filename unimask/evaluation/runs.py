"""The runs behind one row: pretraining on a budget, then three probes, or fine-tune pairs.

Training runs as users run it: the training command line (Workspace.train_script) in a child
process, so a report's run directory is any run's. Probes run in this process
(protocols.evaluate). A fine-tune row fine-tunes from random init and from the checkpoint with
the same seed, once per draw (few-shot episodes x fine-tune seeds), and reads back a finished
fine-tune with the same stamp (records.py) instead of running it again.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from unimask.cli import REPO_ROOT
from unimask.evaluation import budget, plots, protocols, records
from unimask.evaluation.specs import Spec
from unimask.train.logging import read_metrics
from unimask.evaluation.statistics import mean_probes

QUIET = ["train.progress_bar=False", "train.log_every=25"]


@dataclass
class Workspace:
    """Where a report runs and what it writes."""
    runs: str  # run directories and report.json
    md: str  # the markdown file whose marked tables are upserted
    train_script: str  # the training command line, run as `python <train_script> --gin ...`
    specs: Dict[str, Spec] = field(default_factory=dict)  # the table's rows by key
    root: str = REPO_ROOT  # recipes and data paths are relative to it (the child's working directory)
    mirror: Optional[str] = None  # a README whose copy of the table stays in step with md
    command: str = ""  # the command that reruns a row, before its arguments (recorded in report.json)


def train_command(ws: Workspace, spec: Spec, workdir: str, params: List[str]) -> List[str]:
    cmd = [sys.executable, ws.train_script, "--workdir", workdir]
    for path in spec.recipe:
        cmd += ["--gin", path]
    for param in QUIET + spec.params + list(params):
        cmd += ["--gin_param", param]
    return cmd


def train(ws: Workspace, spec: Spec, workdir: str, params: List[str], cpu_limit_s: Optional[float] = None,
          wall_limit_s: Optional[float] = None) -> dict:
    """Train spec's recipe with these extra bindings into a fresh `workdir` -> budget.run_training's facts."""
    return budget.run_training(train_command(ws, spec, workdir, params), workdir, ws.root, cpu_limit_s, wall_limit_s)


def time_steps(ws: Workspace, spec: Spec, workdir: str, params: List[str], probe_steps: int = 40,
               every: int = 5) -> tuple:
    """(CPU seconds per step, start-up CPU seconds) of spec's recipe, from a short timing run."""
    timing = train(ws, spec, workdir, list(params) + budget.timing_params(probe_steps, every))
    return budget.step_cost(timing, probe_steps, every)


def pretrain(ws: Workspace, spec: Spec, minutes: float, workdir: str, params: List[str] = (),
             steps: Optional[int] = None) -> dict:
    """Pretrain on a CPU budget of `minutes` x all cores, or for exactly `steps` steps (the same
    schedule on any CPU, so the figure reproduces where a CPU budget would buy other steps);
    -> timing and step facts of the run."""
    params = list(params)
    budget_s, fixed = budget.cpu_budget(minutes), steps is not None
    if fixed:  # a fixed schedule runs to its end: no budget to stop it
        per_step, caps, why = None, {}, "fixed"
    else:
        per_step, startup = time_steps(ws, spec, workdir + "_speed", params)
        steps = budget.steps_for(budget_s, per_step, startup)
        caps = budget.caps(minutes)
        why = (f"{per_step:.2f} CPU-s/step + {startup:.0f} CPU-s start-up, for {budget_s / 60:.0f} CPU-min "
               f"({minutes:g} min x {os.cpu_count()} cores)")
    warmup = budget.warmup_for(steps)
    print(f"[{spec.key}] {steps} steps ({warmup} warmup): {why}", flush=True)
    timing = train(ws, spec, workdir, params + [f"train.steps={steps}", f"train.warmup_steps={warmup}"], **caps)
    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    print(f"[{spec.key}] trained {rows[-1]['step']}/{steps} steps in {timing['wall_s'] / 60:.1f} min wall, "
          f"{timing['cpu_s'] / 60:.1f} CPU-min, final loss {rows[-1]['loss']:.4f}", flush=True)
    try:
        plots.plot_metrics(plots.read_metrics(workdir), os.path.join(workdir, "curves.png"), title=spec.key)
    except Exception as err:  # curves are a convenience, never a reason to lose the numbers
        print(f"[{spec.key}] no curves: {err}")
    return {"steps": rows[-1]["step"], "planned_steps": steps, "cpu_s_per_step": per_step,
            "wall_min": timing["wall_s"] / 60, "cpu_min": timing["cpu_s"] / 60,
            "budget_cpu_min": None if fixed else budget_s / 60, "fixed_steps": fixed, "cores": os.cpu_count(),
            "load_avg_1min_after": os.getloadavg()[0], "terminated": timing["terminated"],
            "final_loss": rows[-1]["loss"], "final_eval_loss": rows[-1].get("eval_loss"),
            "checkpoint": os.path.join(workdir, "checkpoints", "last.pt")}


# ---- probes ------------------------------------------------------------------------------------
def eval_probe(spec: Spec, checkpoint: str, random_init: bool = False, raw: bool = False, seed: int = 0) -> dict:
    """One of a row's probes: the encoder (random init or pretrained; BatchNorm statistics of the
    probe's train split for every encoder: an untrained BatchNorm's mean 0 / variance 1 would
    decide what a random-init baseline sees; a no-op without BatchNorm) or the raw input."""
    options = dict(checkpoint=checkpoint, protocol=spec.protocol, seed=seed, gin_param=list(spec.eval_params),
                   **spec.probe_options)
    if raw:
        options.update(features="raw", pool=spec.raw_pool)
    else:
        options.update(pool=spec.pool, norm_stats="recompute", random_init=random_init, layer=spec.layer)
    try:
        return protocols.evaluate(protocols.ProbeOptions(**options))
    except ValueError as err:
        if raw and "flatten" in str(err):  # ragged tokens: average them instead
            return protocols.evaluate(protocols.ProbeOptions(**dict(options, pool="mean")))
        raise


def probe_all(spec: Spec, checkpoint: str, seed: int = 0) -> dict:
    out = {}
    for name, kwargs in (("random_init", {"random_init": True}), ("pretrained", {}), ("raw", {"raw": True})):
        out[name] = eval_probe(spec, checkpoint, seed=seed, **kwargs)
        print(f"[{spec.key}] {name}: top1_acc={out[name]['top1_acc']:.2f}", flush=True)
    return out


def finetune_all(ws: Workspace, spec: Spec, checkpoint: str, key: Optional[str] = None, seed: int = 0) -> dict:
    """Fine-tune with spec.finetune from random init and from the checkpoint (same steps and
    seed); top-1 = the last eval_top1 on the test split. Raw: the linear probe on raw input.
    A row with several draws (spec.episodes > 1 draws of a few-shot row's shots, and/or
    spec.finetune_seeds: fine-tune seeds over this one checkpoint) does this per draw and gives
    their means, each draw's result under 'draws' and what varied under 'varied'."""
    seeds, draws = spec.finetune_seeds or [seed], []
    for e in range(spec.episodes):
        episode, raw = [f"{spec.episode_binding}={e}"] if spec.episode_binding else [], None
        for s in seeds:  # the raw probe depends on the episode only: once per episode
            draws.append(finetune_episode(ws, spec, checkpoint, (key or spec.key) + draw_suffix(e, s, seed), s,
                                          episode, raw))
            raw = draws[-1]["raw"]
    if len(draws) == 1:  # a plain row; one fine-tune seed other than the pretraining seed is named in it
        return dict(draws[0], **({"finetune_seed": seeds[0]} if seeds[0] != seed else {}))
    return dict(mean_probes(draws), draws=draws, varied={"episodes": spec.episodes, "finetune_seeds": seeds})


def draw_suffix(episode: int, finetune_seed: int, seed: int) -> str:
    """A draw's run name after the row's: _ep<e> past the first episode, _ft<s> for a fine-tune
    seed other than the pretraining seed ('' for the row's plain run)."""
    return (f"_ep{episode}" if episode else "") + (f"_ft{finetune_seed}" if finetune_seed != seed else "")


def finetune_episode(ws: Workspace, spec: Spec, checkpoint: str, key: str, seed: int, episode: List[str],
                     raw: Optional[dict] = None) -> dict:
    """One fine-tune pair (random init, pretrained) and the raw linear probe (`raw` when it was
    already measured for this episode); `episode`: the bindings of one draw of a few-shot row's
    shots (empty otherwise). A fine-tune that already finished with the same stamp is read back."""
    out = {}
    for name, init in (("random_init", "None"), ("pretrained", repr(checkpoint))):
        run = spec.copy()
        run.recipe, run.params = [spec.finetune], []
        workdir = os.path.join(ws.runs, f"{key}_{name}")
        params = [f"train.init_from={init}", f"train.seed={seed}", *spec.finetune_params, *episode]
        stamp = records.finetune_stamp(train_command(ws, run, workdir, params), run.recipe, run.needs, checkpoint,
                                       ws.root)
        out[name] = records.finished_finetune(workdir, stamp)
        if out[name] is None:
            timing = train(ws, run, workdir, params)
            scored = [row for row in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "eval_top1" in row]
            out[name] = {"top1_acc": scored[-1]["eval_top1"], "steps": scored[-1]["step"],
                         "curve": [(row["step"], row["eval_top1"]) for row in scored],
                         "wall_min": timing["wall_s"] / 60, "cpu_min": timing["cpu_s"] / 60}
            records.save_finetune(workdir, stamp, out[name])
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
