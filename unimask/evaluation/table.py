"""A row of the results table: its cells from a row's Spec, its pretraining run and its probes.

Columns: TABLE_HEADER. A row averaged over draws (few-shot episodes, fine-tune seeds) or over
pretraining seeds says so in its Probe cell and shows every run in its Noise cell (statistics.py).
"""
from __future__ import annotations

from typing import List

from unimask.evaluation.specs import Spec
from unimask.evaluation.statistics import mean_probes, noise_cell, spread_cell

TABLE_HEADER = ["Modality", "Data", "Recipe", "Pretraining", "Probe", "Random init", "Pretrained", "Gain",
                "Raw input", "Noise (1 s.e., test n)"]
SWEEP_HEADER = ["Mask ratio", "Steps", "CPU-min", "Linear probe", "Random init"]


def report_row(spec: Spec, run: dict, probes: dict) -> List[str]:
    """The cells of one row: run = the pretraining run's facts, probes = its three probes."""
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


def seeds_row(spec: Spec, results: List[dict]) -> List[str]:
    """Row cells from several pretraining seeds: the means, and in the noise cell the pretrained
    accuracies' sd, the mean gain's standard error and every seed's figures; one seed: its own row."""
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


def sweep_row(ratio: float, point: dict, random_acc: float) -> List[str]:
    """A mask-ratio sweep's row: the ratio, its steps and CPU minutes, its probe and random init's."""
    return [f"{ratio:.2f}", point["steps"], f"{point['cpu_min']:.1f}", f"{point['top1_acc']:.1f}", f"{random_acc:.1f}"]
