"""A results table, row by row: pretrain, probe, write the row (and the JSON of every number).

run_modality measures one row for one pretraining seed, run_seeds a row over several seeds (means
and spread), run_rows what the command line names (a row or all), run_sweep the linear probe
against the mask ratio (MAE's Fig. 5). Results are merged into <runs>/report.json under the run's
key, so an earlier run of the same budget is reused instead of trained again, and a row with
`pretrained_by` reuses that row's pretraining run.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import List, Optional

from unimask.evaluation import budget, plots, runs
from unimask.evaluation.markdown import update_markdown
from unimask.evaluation.runs import Workspace
from unimask.evaluation.specs import Spec
from unimask.train.logging import read_metrics
from unimask.evaluation.table import SWEEP_HEADER, TABLE_HEADER, report_row, seeds_row, sweep_row


# ---- report.json -------------------------------------------------------------------------------
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


def with_draws_key(probes: dict, episodes: int, seed: int) -> dict:
    """Probes as finetune_all gives them now: report.json written before fine-tune seeds kept a
    few-shot row's draws under 'episodes' (one fine-tune seed, the pretraining seed)."""
    if "episodes" not in probes or "draws" in probes:
        return probes
    probes = dict(probes, draws=probes["episodes"], varied={"episodes": episodes, "finetune_seeds": [seed]})
    del probes["episodes"]
    return probes


# ---- rows --------------------------------------------------------------------------------------
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


def run_modality(ws: Workspace, name: str, minutes: float, params: List[str] = (), probe_only: bool = False,
                 seed: int = 0, write_row: bool = True, steps: Optional[int] = None, episodes: Optional[int] = None,
                 finetune_seeds: Optional[List[int]] = None) -> Optional[dict]:
    """Pretrain row `name` with train.seed=seed (runs/<name>, or runs/<name>_seed<k>), probe it
    with the same seed for the random init and the splits; write its row unless told not to.
    A row with `pretrained_by` reuses that row's run of the same seed and budget when
    report.json has one (a fine-tune row fine-tunes the checkpoint the linear probe read).
    episodes: how many draws of the shots a few-shot row averages (its Spec's number otherwise);
    finetune_seeds: the fine-tune seeds a fine-tune row averages over its one checkpoint."""
    spec = with_draws(ws.specs[name].copy(), episodes, finetune_seeds)
    spec.params += list(params) + ([f"train.seed={seed}"] if seed else [])
    missing = [p for p in spec.required() if not os.path.exists(os.path.join(ws.root, p))]
    if missing:
        print(f"[{name}] skipped: {', '.join(missing)} not found. {spec.how}")
        return None
    key, results = seed_key(name, seed), os.path.join(ws.runs, "report.json")
    if probe_only:  # probe the checkpoint of an earlier run again; --gin_param then binds for the probes
        spec.eval_params += list(params)
        earlier = load_json(results)[key]
        run, minutes = earlier["run"], earlier["minutes"]
        steps = earlier["run"]["planned_steps"] if earlier["run"].get("fixed_steps") else None
    else:
        source = load_json(results).get(seed_key(spec.pretrained_by, seed)) if spec.pretrained_by else None
        if source and same_budget(source, minutes, steps) and os.path.exists(source["run"]["checkpoint"]):
            print(f"[{key}] reusing the pretraining run of {seed_key(spec.pretrained_by, seed)} (same budget)")
            run = source["run"]
        else:
            run = runs.pretrain(ws, spec, minutes, os.path.join(ws.runs, key), steps=steps)
    probes = (runs.finetune_all(ws, spec, run["checkpoint"], key, seed) if spec.finetune
              else runs.probe_all(spec, run["checkpoint"], seed))
    result = {"run": run, "probes": probes, "minutes": minutes, "seed": seed, "episodes": spec.episodes,
              "finetune_seeds": spec.finetune_seeds,
              "command": f"{ws.command} {name} {budget_args(minutes, steps)}" + (f" --seeds {seed}" if seed else "")
              + (f" --episodes {episodes}" if episodes is not None else "")
              + (f" --finetune-seeds {' '.join(map(str, finetune_seeds))}" if finetune_seeds else "")}
    save_json(results, key, result)
    if write_row:
        update_markdown("pretraining", TABLE_HEADER, report_row(spec, run, probes), ws.md, ws.mirror)
    print(f"[{key}] random init {probes['random_init']['top1_acc']:.2f}, pretrained "
          f"{probes['pretrained']['top1_acc']:.2f}, raw {probes['raw']['top1_acc']:.2f}; "
          f"wrote {ws.md if write_row else ''} {results}")
    return result


def run_seeds(ws: Workspace, name: str, minutes: float, params: List[str], seeds: List[int], probe_only: bool = False,
              steps: Optional[int] = None, episodes: Optional[int] = None,
              finetune_seeds: Optional[List[int]] = None) -> Optional[dict]:
    """The row over several pretraining seeds: each seed's run and probes (reusing a seed's earlier
    result in report.json when it has the same budget), then one row with the means and the
    seeds' spread next to the test-set standard error."""
    if finetune_seeds and len(seeds) > 1:  # every pretraining seed would fine-tune the same random inits
        raise SystemExit("--finetune-seeds with several --seeds: the random-init fine-tunes would repeat for "
                         "every pretraining seed; give one pretraining seed")
    earlier = load_json(os.path.join(ws.runs, "report.json"))
    results = []
    wanted = with_draws(ws.specs[name].copy(), episodes, finetune_seeds)
    for seed in seeds:
        key = seed_key(name, seed)
        done = earlier.get(key)
        same_draws = done and (done.get("episodes", 1), done.get("finetune_seeds")) == (wanted.episodes,
                                                                                        wanted.finetune_seeds)
        if same_draws and same_budget(done, minutes, steps) and not probe_only:
            print(f"[{key}] reusing the earlier run of the same budget in report.json")
            results.append(dict(done, probes=with_draws_key(done["probes"], done.get("episodes", 1), seed)))
            continue
        result = run_modality(ws, name, minutes, params, probe_only, seed=seed, write_row=False, steps=steps,
                              episodes=episodes, finetune_seeds=finetune_seeds)
        if result is None:
            return None
        results.append(result)
    update_markdown("pretraining", TABLE_HEADER, seeds_row(ws.specs[name].copy(), results), ws.md, ws.mirror)
    return {"seeds": seeds, "results": results}


def run_rows(ws: Workspace, what: str, minutes: float, params: List[str] = (), seeds: Optional[List[int]] = None,
             probe_only: bool = False, steps: Optional[int] = None, episodes: Optional[int] = None,
             finetune_seeds: Optional[List[int]] = None):
    """Row `what`, or every row for 'all' (where --episodes reaches only the few-shot rows and
    --finetune-seeds only the fine-tune rows)."""
    for name in (list(ws.specs) if what == "all" else [what]):
        spec = ws.specs[name]
        draws = {"episodes": episodes if what != "all" or spec.episode_binding else None,
                 "finetune_seeds": finetune_seeds if what != "all" or spec.finetune else None}
        if seeds:
            run_seeds(ws, name, minutes, list(params), seeds, probe_only, steps=steps, **draws)
        else:
            run_modality(ws, name, minutes, list(params), probe_only, steps=steps, **draws)


# ---- mask-ratio sweep --------------------------------------------------------------------------
def run_sweep(ws: Workspace, minutes: float, ratios: List[float], params: List[str], name: str,
              ratio_binding: str = "ConstantRatio.ratio") -> dict:
    """Same number of steps for every ratio (timed at the lowest ratio, the slowest), so each
    point has seen the same data, as in MAE's Fig. 5; `name` is the row whose recipe and data
    are swept. The picture goes next to ws.md too."""
    spec = ws.specs[name].copy()
    spec.params += list(params)
    base = os.path.join(ws.runs, "sweep")
    per_step, startup = runs.time_steps(ws, spec, os.path.join(base, "speed"), [f"{ratio_binding}={min(ratios)}"])
    steps = budget.steps_for(budget.cpu_budget(minutes), per_step, startup)
    warmup = budget.warmup_for(steps)
    print(f"[sweep] {per_step:.2f} CPU-s/step at ratio {min(ratios)} -> {steps} steps per ratio", flush=True)
    points = {}
    for ratio in ratios:
        workdir = os.path.join(base, f"ratio_{ratio}")
        timing = runs.train(ws, spec, workdir, [f"{ratio_binding}={ratio}", f"train.steps={steps}",
                                                f"train.warmup_steps={warmup}"], **budget.caps(minutes))
        ckpt = os.path.join(workdir, "checkpoints", "last.pt")
        points[ratio] = {"top1_acc": runs.eval_probe(spec, ckpt)["top1_acc"], "wall_min": timing["wall_s"] / 60,
                         "cpu_min": timing["cpu_s"] / 60, "steps": read_metrics(os.path.join(workdir, "metrics.jsonl"))[-1]["step"]}
        print(f"[sweep] ratio {ratio}: top1_acc={points[ratio]['top1_acc']:.2f}", flush=True)
    random_acc = runs.eval_probe(spec, ckpt, random_init=True)["top1_acc"]
    png = plots.plot_sweep(ratios, [points[r]["top1_acc"] for r in ratios], random_acc,
                           os.path.join(base, "mask_ratio.png"))
    shutil.copy(png, os.path.join(os.path.dirname(ws.md), "mask_ratio.png"))  # next to the tables, for the docs
    result = {"points": {str(r): v for r, v in points.items()}, "random_init": random_acc, "steps": steps,
              "data": spec.data, "png": png,
              "command": f"{ws.command} sweep --minutes {minutes:g} --on {name}"}
    save_json(os.path.join(ws.runs, "report.json"), "sweep", result)
    for ratio in ratios:
        update_markdown("sweep", SWEEP_HEADER, sweep_row(ratio, points[ratio], random_acc), ws.md, ws.mirror)
    print(f"[sweep] wrote {png}, {ws.md}")
    return result
