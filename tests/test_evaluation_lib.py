"""unimask/evaluation/ piece by piece: marked tables, noise and spreads, CPU budgets and the training
child process, fine-tune records, the rows' data file, the probe's data rebuilt through gin, and a
report's rows end to end with training and probing stood in for (what the rows compute from them)."""
import json
import os
import sys

import gin
import pytest

from helpers import ROOT, cli
from unimask.evaluation import budget, records, report, runs
from unimask.evaluation.markdown import update_markdown, upsert_row
from unimask.evaluation.plots import read_metrics
from unimask.evaluation.probe_data import build_dataset, dataset_takes
from unimask.evaluation.protocols import OPTION_NAMES, ProbeOptions
from unimask.evaluation.specs import Spec, load_specs, specs_from
from unimask.evaluation.statistics import mean_probes, noise_cell, spread_cell
from unimask.evaluation.table import report_row
from unimask.train import logging as run_log

SPECS_JSON = os.path.join(ROOT, "gin", "report_specs.json")


def workspace(tmp_path, **kw) -> runs.Workspace:
    """A report's workspace in tmp_path with the shipped rows."""
    place = dict(runs=str(tmp_path / "runs"), md=str(tmp_path / "report.md"),
                 train_script=os.path.join(ROOT, "tools", "train.py"), specs=load_specs(SPECS_JSON, OPTION_NAMES),
                 command="python tools/report.py")
    return runs.Workspace(**dict(place, **kw))


# ---- markdown tables ---------------------------------------------------------------------------
def test_upsert_replaces_its_row_keeps_the_others_and_all_other_text():
    header = ["Modality", "Acc"]
    text = "# Title\n\nintro\n"
    text = upsert_row(text, "t", header, ["images", "80.0"])  # no table yet: made at the end
    assert text == "# Title\n\nintro\n\n<!-- table:t -->\n| Modality | Acc |\n| --- | --- |\n| images | 80.0 |\n<!-- /table:t -->\n"
    text = upsert_row(text, "t", header, ["points", "60.0"]) + "\nnotes after the table\n"
    text = upsert_row(text, "t", header, ["images", "82.5"])
    assert text.startswith("# Title\n\nintro\n") and text.endswith("\nnotes after the table\n")
    assert "| images | 82.5 |" in text and "80.0" not in text and text.index("images") < text.index("points")
    assert "| points | 60.0 |" in text
    text = upsert_row(text, "t", header, ["images-full", "a|b"])  # a key that starts like another: its own row
    assert "| images | 82.5 |" in text and "| images-full | a\\|b |" in text
    other = upsert_row(text, "u", header, ["images", "1"])  # another table: this one is left alone
    assert other.split("<!-- table:u -->")[0] == text.rstrip("\n") + "\n\n"


def test_update_markdown_writes_the_mirror_only_where_it_has_the_table(tmp_path):
    md, readme, plain = tmp_path / "docs" / "report.md", tmp_path / "README.md", tmp_path / "OTHER.md"
    readme.write_text("# Readme\n<!-- table:t -->\n| K | V |\n| --- | --- |\n| a | 1 |\n<!-- /table:t -->\nend\n")
    plain.write_text("# nothing marked\n")
    update_markdown("t", ["K", "V"], ["a", "2"], str(md), mirror=str(readme))
    update_markdown("t", ["K", "V"], ["b", "3"], str(md), mirror=str(plain))
    assert "| a | 2 |" in md.read_text() and "| b | 3 |" in md.read_text()  # made, with its folder
    assert "| a | 2 |" in readme.read_text() and readme.read_text().endswith("end\n")
    assert "| b |" not in readme.read_text() and plain.read_text() == "# nothing marked\n"


# ---- statistics and cells ----------------------------------------------------------------------
def test_noise_cell_is_the_binomial_standard_error():
    assert noise_cell(80.0, 400) == "±2.0 (n=400)"  # sqrt(0.8 * 0.2 / 400) = 0.02
    assert noise_cell(50.0, 10000) == "±0.5 (n=10000)"
    assert noise_cell(80.0, None) == "?" and noise_cell(80.0, 0) == "?"


def test_spread_and_mean_of_paired_runs():
    runs_ = [{"pretrained": {"top1_acc": p, "n_test": 100, "steps": 7}, "random_init": {"top1_acc": r},
              "raw": {"top1_acc": 30.0}} for p, r in ((70.0, 60.0), (74.0, 62.0), (72.0, 61.0))]
    # pretrained sd 2.0; gains 10 / 12 / 11: sd 1.0, standard error 1 / sqrt(3) = 0.58
    assert spread_cell("±4.5 (n=100)", "seeds", runs_) == (
        "±4.5 (n=100); seeds sd 2.0, mean gain ±0.6 (pretrained 70.0 / 74.0 / 72.0, random 60.0 / 62.0 / 61.0)")
    mean = mean_probes(runs_)
    assert mean["pretrained"] == {"top1_acc": 72.0, "steps": 7, "n_test": 100}
    assert mean["random_init"] == {"top1_acc": 61.0} and mean["raw"] == {"top1_acc": 30.0}
    assert "nan" in spread_cell("?", "episodes", runs_[:1])  # one run has no spread: said, not invented


def test_report_row_cells_for_a_linear_and_a_fine_tune_row():
    run = {"steps": 500, "cpu_min": 3.14, "wall_min": 2.0, "cores": 2, "fixed_steps": True}
    probes = {"random_init": {"top1_acc": 61.04}, "pretrained": {"top1_acc": 70.0, "n_test": 100, "steps": 90},
              "raw": {"top1_acc": 55.55}}
    linear = Spec("rowkey", "some data", ["gin/a.gin", "gin/b.gin"], layer=2)
    assert report_row(linear, run, probes) == [
        "rowkey", "some data", "`gin/a.gin` + `gin/b.gin`", "500 steps (fixed), 3.1 CPU-min (2.0 min wall on 2 shared cores)",
        "linear, mean-pool, block 2", "61.0", "**70.0**", "+9.0", "55.5", "±4.6 (n=100)"]
    tuned = Spec("ft", "d", ["gin/a.gin"], protocol="finetune", finetune="gin/ft.gin")
    cells = report_row(tuned, dict(run, fixed_steps=False), dict(probes, finetune_seed=3))
    assert cells[3].startswith("500 steps, ") and cells[4] == "fine-tune `gin/ft.gin`, 90 steps; raw: linear; fine-tune seed 3"


# ---- budgets and the training child ------------------------------------------------------------
def test_steps_fit_the_budget_and_timing_runs_give_the_steady_state_cost():
    assert budget.steps_for(600, 0.5, startup_s=100) == 970 and budget.steps_for(1, 10.0) == 20  # at least 20
    assert budget.warmup_for(400) == 20 and budget.warmup_for(5) == 1
    assert budget.caps(1.0) == {"cpu_limit_s": 2.0 * budget.cpu_budget(1.0), "wall_limit_s": 4.0 * 60 + 120}
    # 40 steps, a row every 5: rows 1..7 at 10 CPU-s + 2.5 per row (0.5 per step); row 8 waits for the eval
    timing = {"row_cpu": [(rows, 10.0 + 2.5 * rows) for rows in range(1, 9)], "cpu_s": 40.0}
    per_step, startup = budget.step_cost(timing, probe_steps=40, every=5)
    assert per_step == pytest.approx(0.5) and startup == pytest.approx(40.0 - 40 * 0.5)
    with pytest.raises(RuntimeError, match="could not time"):
        budget.step_cost({"row_cpu": [(1, 3.0)], "cpu_s": 5.0})
    assert budget.timing_params(40, 5)[:2] == ["train.steps=40", "train.log_every=5"]
    assert budget.tree_cpu_seconds(os.getpid()) > 0  # this test process has used CPU


CHILD = """
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as the trainer: stop cleanly on SIGTERM
workdir, rows, forever = sys.argv[1], int(sys.argv[2]), sys.argv[3] == 'forever'
for step in range(1, rows + 1):
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
        f.write(json.dumps({'step': step, 'loss': 1.0 / step}) + '\\n')
    time.sleep(0.3)
while forever:
    time.sleep(0.05)
print('child says bye'); sys.exit(0 if rows else 3)
"""


def test_training_child_is_watched_stopped_past_its_limit_and_its_failure_named(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    open(os.path.join(workdir, "stale.txt"), "w").close()
    done = budget.run_training([sys.executable, "-c", CHILD, workdir, "3", "once"], workdir, str(tmp_path))
    assert not os.path.exists(os.path.join(workdir, "stale.txt"))  # a fresh workdir
    seen = [rows for rows, _ in done["row_cpu"]]  # (rows written, CPU s) as each new row appeared
    assert not done["terminated"] and seen and seen == sorted(set(seen)) and seen[-1] <= 3
    assert len(run_log.read_metrics(os.path.join(workdir, "metrics.jsonl"))) == 3 and done["wall_s"] >= 0.9
    stopped = budget.run_training([sys.executable, "-c", CHILD, workdir, "1", "forever"], workdir, str(tmp_path),
                                  wall_limit_s=1.5)
    assert stopped["terminated"] and 1.5 <= stopped["wall_s"] < 10
    with pytest.raises(RuntimeError, match=r"(?s)training failed \(exit 3\).*child says bye"):
        budget.run_training([sys.executable, "-c", CHILD, workdir, "0", "once"], workdir, str(tmp_path))


# ---- fine-tune records -------------------------------------------------------------------------
def test_finetune_stamp_changes_with_an_included_recipe_the_data_or_the_checkpoint(tmp_path):
    root = tmp_path
    (root / "gin").mkdir()
    (root / "gin" / "base.gin").write_text("train.steps = 10\n")
    (root / "gin" / "ft.gin").write_text("include 'gin/base.gin'\ntrain.seed = 1\n")
    (root / "data").mkdir()
    (root / "data" / "a.npy").write_bytes(b"12345")
    checkpoint = root / "last.pt"
    checkpoint.write_bytes(b"weights")
    command = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--gin", "gin/ft.gin"]

    def stamp():
        return records.finetune_stamp(command, ["gin/ft.gin"], ["data"], str(checkpoint), str(root))

    first = stamp()
    assert list(first["recipes"]) == ["gin/ft.gin", "gin/base.gin"] and first["data"][:2] == [1, 5]
    assert stamp() == first  # nothing changed: the same stamp, so the result is read back
    (root / "gin" / "base.gin").write_text("train.steps = 20\n")  # a recipe the row's recipe includes
    second = stamp()
    assert second["recipes"]["gin/base.gin"] != first["recipes"]["gin/base.gin"] and second != first
    (root / "data" / "b.npy").write_bytes(b"6")
    third = stamp()
    assert third["data"][:2] == [2, 6] and third != second
    os.utime(checkpoint, ns=(1, 1))  # another pretraining run's file
    assert stamp()["checkpoint"] != third["checkpoint"]
    roots = records.code_roots(command, str(root))
    assert roots[0].endswith(os.path.join("tools", "train.py")) and any(r.endswith("unimask") for r in roots)
    assert any(r.endswith("modalities") for r in roots)  # the adapter package, from its entry point


def test_only_a_finished_fine_tune_is_recorded_and_read_back_under_its_own_stamp(tmp_path):
    workdir = str(tmp_path)
    (tmp_path / "config.gin").write_text("train.steps = 100\n")
    records.save_finetune(workdir, {"s": 1}, {"steps": 60, "top1_acc": 50.0})  # stopped at 60 of 100
    assert records.finished_finetune(workdir, {"s": 1}) is None
    records.save_finetune(workdir, {"s": 1}, {"steps": 100, "top1_acc": 70.0})
    assert records.finished_finetune(workdir, {"s": 1}) == {"steps": 100, "top1_acc": 70.0}
    assert records.finished_finetune(workdir, {"s": 2}) is None


# ---- the rows' data file -----------------------------------------------------------------------
def test_rows_copy_an_earlier_row_and_bad_rows_are_named():
    specs = specs_from([{"key": "a", "data": "d", "recipe": ["gin/x.gin"], "needs": ["n"], "note": "why a"},
                        {"key": "b", "like": "a", "recipe": ["gin/y.gin"], "probe_options": {"modality": "m"}}],
                       OPTION_NAMES)
    assert (specs["b"].data, specs["b"].needs, specs["b"].recipe, specs["b"].note) == ("d", ["n"], ["gin/y.gin"], "")
    specs["b"].needs.append("other")
    assert specs["a"].needs == ["n"]  # a copy, not the same list
    for rows, message in (([{"key": "a", "data": "d", "recipe": [], "recipes": []}], "unknown field"),
                          ([{"key": "a", "like": "z"}], "names no earlier row"),
                          ([{"key": "a", "data": "d", "recipe": []}] * 2, "appears twice"),
                          ([{"key": "a", "data": "d", "recipe": [], "probe_options": {"smell": 1}}], "not probe options")):
        with pytest.raises(ValueError, match=message):
            specs_from(rows, OPTION_NAMES)


def test_the_shipped_rows_name_recipes_that_exist_and_rows_they_reuse():
    specs = load_specs(SPECS_JSON, OPTION_NAMES)
    assert list(specs)[:2] == ["images", "images-finetune"] and len(specs) >= 28
    for spec in specs.values():
        for path in spec.recipe + ([spec.finetune] if spec.finetune else []):
            assert os.path.isfile(os.path.join(ROOT, path)), (spec.key, path)
        assert spec.pretrained_by is None or spec.pretrained_by in specs
        ProbeOptions(**spec.probe_options)  # every row's options are probe options
    lpft, plain = specs["points3d-10shot-lpft"], specs["points3d-10shot"]
    assert lpft.finetune == "gin/finetune_points_lpft.gin" and lpft.episodes == plain.episodes == 5
    assert lpft.finetune_params == plain.finetune_params and lpft.eval_params == plain.eval_params


def test_report_cli_lists_the_rows_of_the_data_file_as_its_own_script():
    code, output, _ = cli(["tools/report.py", "--help"])
    assert code == 0 and "points3d-10shot-lpft" in output and "sweep" in output
    code, output, _ = cli(["tools/report.py", "no-such-row"])
    assert code == 2 and "invalid choice" in output


def test_curves_keep_the_last_row_of_a_repeated_step(tmp_path):
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.0}]


# ---- the probe's data through gin --------------------------------------------------------------
@gin.configurable("ToyInner", module="evaluation_lib_test")
class ToyInner:
    def __init__(self, split="train", augment=True, root="r"):
        self.split, self.augment, self.root = split, augment, root


@gin.configurable("ToyOuter", module="evaluation_lib_test")
class ToyOuter:
    def __init__(self, datasets=None, size=3):  # takes no split itself: its members do
        self.datasets, self.size = datasets, size


def test_probe_settings_reach_nested_datasets_and_leave_the_runs_bindings_alone():
    import unimask.train.trainer  # noqa: F401  (registers `train`, whose dataset the probe rebuilds)

    gin.parse_config("train.dataset = @ToyOuter()\n"
                     "ToyOuter.datasets = {'a': @ToyInner(), 'b': [@ToyInner()]}\n"
                     "ToyInner.augment = True\nToyInner.root = 'data'\n")
    assert dataset_takes("split") and dataset_takes("augment") and not dataset_takes("test_root")
    train = build_dataset("probe_train", split="train", augment=False)
    test = build_dataset("probe_test", split="test", augment=False)
    assert isinstance(train, ToyOuter) and train.size == 3  # the outer one takes no split: none is forced on it
    assert [train.datasets["a"].split, train.datasets["b"][0].split, test.datasets["a"].split] == ["train", "train", "test"]
    assert not test.datasets["a"].augment and test.datasets["a"].root == "data"  # the run's other bindings hold
    assert gin.query_parameter("ToyInner.augment") is True and ToyInner().augment  # outside the probe: the run's


def test_a_shared_dataset_is_rebuilt_per_split_and_a_scoped_member_is_named():
    import unimask.train.trainer  # noqa: F401

    gin.parse_config("train.dataset = @shared/singleton()\nshared/singleton.constructor = @ToyInner\n")
    train, test = build_dataset("probe_train", split="train"), build_dataset("probe_test", split="test")
    assert (train.split, test.split) == ("train", "test") and train is not test
    gin.clear_config()
    gin.parse_config("train.dataset = @ToyOuter()\nToyOuter.datasets = {'a': @other/ToyInner()}\n")
    with pytest.raises(ValueError, match="other/.*ToyInner in a scope of its own, so the probe cannot set its split"):
        build_dataset("probe_train", split="train")


def test_probe_options_say_what_cannot_run_and_modality_needs_a_cross_modal_model():
    from helpers import tiny_image_model

    assert ProbeOptions().problem() == "give --checkpoint, or --gin with --random-init"
    assert "add --random-init" in ProbeOptions(gin=["x.gin"]).problem()
    assert "nothing to fine-tune" in ProbeOptions(checkpoint="c", features="raw", protocol="finetune").problem()
    assert ProbeOptions(checkpoint="c").problem() is None
    with pytest.raises(ValueError, match="has one modality"):
        tiny_image_model().probe_modalities("image")


# ---- a report's rows, training and probing stood in for ----------------------------------------
def test_report_seeds_row_gives_means_and_the_seed_spread(tmp_path):
    """--seeds: earlier runs of the same budget are reused, the row shows the means of the
    random-init and pretrained accuracies and the pretrained accuracies' sd across seeds."""

    def result(seed, pre, rnd):
        run = {"steps": 100 + seed, "cpu_min": 1.0, "wall_min": 1.0, "cores": 2, "checkpoint": "x"}
        probes = {"pretrained": {"top1_acc": pre, "n_test": 400}, "random_init": {"top1_acc": rnd},
                  "raw": {"top1_acc": 20.0, "n_test": 400}}
        return {"run": run, "probes": probes, "minutes": 10, "seed": seed}

    earlier = {"points3d": result(0, 75.0, 58.0), "points3d_seed1": result(1, 73.0, 60.0),
               "points3d_seed2": result(2, 77.0, 59.0)}
    (tmp_path / "report.json").write_text(json.dumps(earlier))
    md = tmp_path / "report.md"
    md.write_text("# Report\n")
    out = report.run_seeds(workspace(tmp_path, runs=str(tmp_path), md=str(md)), "points3d", 10, [], [0, 1, 2])
    assert len(out["results"]) == 3
    row = next(line for line in md.read_text().splitlines() if line.startswith("| points3d |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("3 seeds, 100, 101, 102 steps")
    assert cells[5] == "59.0" and cells[6] == "**75.0**" and cells[7] == "+16.0"
    # gains 17 / 13 / 18: sd 2.65, so the mean gain's standard error is 2.65 / sqrt(3) = 1.5
    assert "seeds sd 2.0, mean gain ±1.5 (pretrained 75.0 / 73.0 / 77.0" in cells[9]
    assert cells[9].startswith("±2.2 (n=400)")


def finished_run(workdir: str, step: int, top1: float) -> dict:
    """What runs.train leaves behind, without training (a stand-in for it): a checkpoint,
    one scored metrics row, and the timing it returns."""
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    open(os.path.join(workdir, "checkpoints", "last.pt"), "w").close()
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": step, "loss": 0.5, "eval_top1": top1}) + "\n")
    return {"wall_s": 1.0, "cpu_s": 2.0, "terminated": False, "row_cpu": []}


def finished_pretraining(tmp_path) -> tuple:
    """A workspace whose report.json already holds a points3d-unlabeled run of 400 fixed steps
    (what the fine-tune rows reuse), with that run's checkpoint: -> (workspace, checkpoint)."""
    ws = workspace(tmp_path)
    checkpoint = str(tmp_path / "last.pt")
    open(checkpoint, "w").close()
    run = {"steps": 400, "planned_steps": 400, "fixed_steps": True, "cpu_min": 1.0, "wall_min": 1.0, "cores": 2,
           "checkpoint": checkpoint}
    report.save_json(os.path.join(ws.runs, "report.json"), "points3d-unlabeled", {"run": run, "minutes": 10})
    return ws, checkpoint


def test_report_fixed_steps_skip_the_timing_run_and_a_finetune_row_reuses_its_pretraining(tmp_path, monkeypatch):
    """--steps N: no timing run, exactly N steps with 5% warmup and no budget to stop them; a row
    with pretrained_by (points3d-finetune) fine-tunes the checkpoint of that row's run of the same
    seed and budget instead of pretraining again, and pretrains when the budgets differ."""
    calls = []

    def fake_training(ws, spec, workdir, params, cpu_limit_s=None, wall_limit_s=None):
        calls.append((spec.key, params, cpu_limit_s, wall_limit_s))
        return finished_run(workdir, 400, 70.0)

    def no_timing(*args, **kwargs):
        raise AssertionError("a fixed schedule must not time steps")

    monkeypatch.setattr(runs, "train", fake_training)
    monkeypatch.setattr(runs, "time_steps", no_timing)
    monkeypatch.setattr(runs, "eval_probe", lambda *a, **k: {"top1_acc": 20.0, "n_test": 288})
    ws = workspace(tmp_path)
    ws.specs["points3d-finetune"].needs = []  # data/kicad3d need not be here
    run = runs.pretrain(ws, ws.specs["points3d"], 10, str(tmp_path / "p"), steps=400)
    assert calls[-1][1][-2:] == ["train.steps=400", "train.warmup_steps=20"] and calls[-1][2:] == (None, None)
    assert run["fixed_steps"] and run["planned_steps"] == 400 and run["budget_cpu_min"] is None
    report.save_json(os.path.join(ws.runs, "report.json"), "points3d", {"run": run, "minutes": 10})
    calls.clear()
    result = report.run_modality(ws, "points3d-finetune", 10, steps=400)
    assert [c[0] for c in calls] == ["points3d-finetune"] * 2  # two fine-tunes, no pretraining
    assert f"train.init_from={run['checkpoint']!r}" in calls[1][1]
    assert result["command"] == "python tools/report.py points3d-finetune --steps 400"
    assert "| points3d-finetune |" in open(ws.md).read() and "400 steps (fixed)" in open(ws.md).read()
    calls.clear()
    report.run_modality(ws, "points3d-finetune", 10, steps=800)  # another budget: pretrain first
    assert any("train.steps=800" in c[1] for c in calls)


def test_report_few_shot_row_averages_episodes_of_the_shots(tmp_path, monkeypatch):
    """--episodes N: a few-shot row fine-tunes both inits once per draw of its shots (the episode
    binding in the fine-tune and in the raw probe), and its row shows the means, the episodes'
    spread and every draw; a row without draws refuses --episodes before it trains anything."""
    calls, probes = [], []

    def fake_training(ws, spec, workdir, params, cpu_limit_s=None, wall_limit_s=None):
        calls.append(params)
        episode = int(next(p for p in params if p.startswith("PointCloudDataset.episode=")).split("=")[1])
        top1 = 60.0 + episode + (4.0 if "None" not in params[0] else 0.0)  # pretrained: +4 in every draw
        return finished_run(workdir, 600, top1)

    def fake_probe(spec, checkpoint, **kwargs):
        probes.append(list(spec.eval_params))
        return {"top1_acc": 10.0, "n_test": 288}

    monkeypatch.setattr(runs, "train", fake_training)
    monkeypatch.setattr(runs, "eval_probe", fake_probe)
    ws, checkpoint = finished_pretraining(tmp_path)
    ws.specs["points3d-10shot"].needs = []  # its data need not be here
    result = report.run_modality(ws, "points3d-10shot", 10, steps=400, episodes=3)
    assert len(calls) == 6 and [c[-1] for c in calls[::2]] == [f"PointCloudDataset.episode={e}" for e in range(3)]
    assert [p[-1] for p in probes] == [f"PointCloudDataset.episode={e}" for e in range(3)]
    assert result["probes"]["pretrained"]["top1_acc"] == 65.0 and result["probes"]["random_init"]["top1_acc"] == 61.0
    assert result["command"].endswith("--steps 400 --episodes 3")
    row = next(line for line in open(ws.md).read().splitlines() if line.startswith("| points3d-10shot |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:8] == ["61.0", "**65.0**", "+4.0"] and "mean of 3 episodes" in cells[4]
    assert "episodes sd 1.0, mean gain ±0.0 (pretrained 64.0 / 65.0 / 66.0, random 60.0 / 61.0 / 62.0)" in cells[9]
    calls.clear()
    one = report.run_modality(ws, "points3d-10shot", 10, steps=400, episodes=1)  # one draw: a plain row
    assert calls == []  # episode 0's fine-tunes finished above: read back
    assert "draws" not in one["probes"] and one["probes"]["pretrained"]["top1_acc"] == 64.0
    assert "nan" not in open(ws.md).read() and "mean of" not in open(ws.md).read()
    both = report.run_modality(ws, "points3d-10shot", 10, steps=400, episodes=2, finetune_seeds=[0, 1])
    assert len(calls) == 4 and all("train.seed=1" in c for c in calls)  # seed 0 of episodes 0 and 1: read back
    assert len(both["probes"]["draws"]) == 4
    assert "mean of 4 runs: 2 episodes (draws of the shots) x 2 fine-tune seeds (0 1)" in open(ws.md).read()
    calls.clear()
    with pytest.raises(SystemExit, match="not a few-shot fine-tune row"):
        report.run_modality(ws, "points3d-finetune", 10, steps=400, episodes=3)
    assert calls == []


def test_report_finetune_seeds_fine_tune_one_checkpoint_once_per_seed(tmp_path, monkeypatch):
    """--finetune-seeds 0 1 2: a fine-tune row fine-tunes both inits from the one pretraining
    checkpoint once per seed (train.seed=<s>, its own run directory) and probes raw input once;
    its row shows the means, the seeds' spread and every seed's figures; run_seeds reuses the
    result only for the same seeds; a refused combination trains nothing."""
    calls, raw_probes = [], []

    def fake_training(ws, spec, workdir, params, cpu_limit_s=None, wall_limit_s=None):
        calls.append((os.path.basename(workdir), params))
        seed = int(next(p for p in params if p.startswith("train.seed=")).split("=")[1])
        top1 = 70.0 + 2 * seed + (3.0 + seed if "None" not in params[0] else 0.0)  # gains 3 / 4 / 5
        return finished_run(workdir, 1200, top1)

    monkeypatch.setattr(runs, "train", fake_training)
    monkeypatch.setattr(runs, "eval_probe", lambda *a, **k: raw_probes.append(1) or {"top1_acc": 50.0, "n_test": 288})
    ws, checkpoint = finished_pretraining(tmp_path)
    ws.specs["points3d-unlabeled-finetune-lpft"].needs = []  # its data need not be here
    name = "points3d-unlabeled-finetune-lpft"
    result = report.run_seeds(ws, name, 10, [], [0], steps=400, finetune_seeds=[0, 1, 2])
    assert [c[0] for c in calls] == [f"{name}{suffix}_{init}" for suffix in ("", "_ft1", "_ft2")
                                     for init in ("random_init", "pretrained")]
    assert all(f"train.init_from={checkpoint!r}" in c[1] for c in calls[1::2])  # one checkpoint, no pretraining
    assert [c[1][1] for c in calls[::2]] == ["train.seed=0", "train.seed=1", "train.seed=2"]
    assert len(raw_probes) == 1  # raw input does not depend on the fine-tune seed
    probes = result["results"][0]["probes"]
    assert probes["pretrained"]["top1_acc"] == 76.0 and probes["random_init"]["top1_acc"] == 72.0
    assert result["results"][0]["command"].endswith("--steps 400 --finetune-seeds 0 1 2")
    row = next(line for line in open(ws.md).read().splitlines() if line.startswith(f"| {name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:8] == ["72.0", "**76.0**", "+4.0"] and "mean of 3 fine-tune seeds (0 1 2)" in cells[4]
    # gains 3 / 4 / 5: sd 1, standard error 1 / sqrt(3)
    assert "fine-tune seeds sd 3.0, mean gain ±0.6 (pretrained 73.0 / 76.0 / 79.0, random 70.0 / 72.0 / 74.0)" in cells[9]
    for draw in ("", "_ft1", "_ft2"):  # without the fine-tunes' own records, only report.json can give it
        for init in ("random_init", "pretrained"):
            os.remove(os.path.join(ws.runs, f"{name}{draw}_{init}", records.FINETUNE_RECORD))
    calls.clear()
    report.run_seeds(ws, name, 10, [], [0], steps=400, finetune_seeds=[0, 1, 2])
    assert calls == []  # the same seeds: reused from report.json
    report.run_seeds(ws, name, 10, [], [0], steps=400, finetune_seeds=[0, 5])
    assert [c[0] for c in calls] == [f"{name}{draw}_{init}" for draw in ("", "_ft5")
                                     for init in ("random_init", "pretrained")]
    calls.clear()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a refused row trains nothing")

    monkeypatch.setattr(runs, "train", must_not_train)
    with pytest.raises(SystemExit, match="not a fine-tune row"):
        report.run_modality(ws, "points3d-unlabeled", 10, steps=400, finetune_seeds=[0, 1])
    with pytest.raises(SystemExit, match="different seeds"):
        report.run_modality(ws, name, 10, steps=400, finetune_seeds=[1, 1])
    with pytest.raises(SystemExit, match="one pretraining seed"):
        report.run_seeds(ws, name, 10, [], [0, 1], steps=400, finetune_seeds=[0, 1])


def test_report_reads_back_a_finished_fine_tune_but_not_a_stopped_one_or_another_checkpoint(tmp_path, monkeypatch):
    """A many-draw row that was stopped resumes: a fine-tune whose run directory holds its result
    with the same stamp is read back; one that stopped short of its train.steps, or one that
    started from another checkpoint file, runs again. The stamp covers included recipes too."""
    calls, short = [], set()

    def fake_training(ws, spec, workdir, params, cpu_limit_s=None, wall_limit_s=None):
        calls.append(os.path.basename(workdir))
        timing = finished_run(workdir, 600 if os.path.basename(workdir) in short else 1200, 80.0)
        with open(os.path.join(workdir, "config.gin"), "w") as f:
            f.write("train.steps = 1200\ntrain.seed = 0\n")
        return timing

    monkeypatch.setattr(runs, "train", fake_training)
    monkeypatch.setattr(runs, "eval_probe", lambda *a, **k: {"top1_acc": 50.0, "n_test": 288})
    ws, checkpoint = finished_pretraining(tmp_path)
    ws.specs["points3d-unlabeled-finetune"].needs = []  # its data need not be here
    name = "points3d-unlabeled-finetune"
    short.add(f"{name}_ft1_pretrained")  # this one is stopped at step 600 of 1200
    report.run_modality(ws, name, 10, steps=400, finetune_seeds=[0, 1])
    assert len(calls) == 4
    calls.clear()
    short.clear()
    report.run_modality(ws, name, 10, steps=400, finetune_seeds=[0, 1])
    assert calls == [f"{name}_ft1_pretrained"]  # the finished ones are read back, the stopped one runs again
    calls.clear()
    os.utime(checkpoint, ns=(1, 1))  # another pretraining run's checkpoint: nothing is read back
    report.run_modality(ws, name, 10, steps=400, finetune_seeds=[0, 1])
    assert len(calls) == 4
    closure = records.recipe_closure(["gin/finetune_points_lpft.gin"], ROOT)  # includes of includes, each once
    assert closure[:3] == ["gin/finetune_points_lpft.gin", "gin/finetune_points.gin", "gin/point_mae_kicad_cpu.gin"]
    assert "gin/point_mae.gin" in closure and len(set(closure)) == len(closure)



def test_sweep_trains_every_ratio_for_the_same_steps_and_writes_its_table_and_picture(tmp_path, monkeypatch):
    """The mask-ratio sweep: one timing run at the lowest ratio sizes every run; each ratio gets the
    same steps and warmup, its probe, a row of the sweep table and a point of the PNG next to md."""
    ws = workspace(tmp_path)
    timed, trained = [], []

    def fake_time_steps(ws_, spec, workdir, params):
        timed.append(params)
        return 0.5, 10.0

    def fake_training(ws_, spec, workdir, params, cpu_limit_s=None, wall_limit_s=None):
        trained.append((params, cpu_limit_s))
        return finished_run(workdir, int(params[1].split("=")[1]), 0.0)

    monkeypatch.setattr(runs, "time_steps", fake_time_steps)
    monkeypatch.setattr(runs, "train", fake_training)
    monkeypatch.setattr(runs, "eval_probe", lambda spec, ckpt, random_init=False: {
        "top1_acc": 40.0 if random_init else 60.0 + 10 * float(ckpt.split(os.sep)[-3][len("ratio_"):])})
    result = report.run_sweep(ws, 1.0, [0.5, 0.75], [], name="images")
    steps = budget.steps_for(budget.cpu_budget(1.0), 0.5, 10.0)
    assert timed == [["ConstantRatio.ratio=0.5"]] and result["steps"] == steps
    assert [p for p, _ in trained] == [[f"ConstantRatio.ratio={r}", f"train.steps={steps}",
                                        f"train.warmup_steps={budget.warmup_for(steps)}"] for r in (0.5, 0.75)]
    assert all(cap == budget.caps(1.0)["cpu_limit_s"] for _, cap in trained)
    text = open(ws.md).read()
    assert f"| 0.50 | {steps} | 0.0 | 65.0 | 40.0 |" in text and f"| 0.75 | {steps} | 0.0 | 67.5 | 40.0 |" in text
    with open(os.path.join(tmp_path, "mask_ratio.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(os.path.join(ws.runs, "report.json")))["sweep"]["random_init"] == 40.0
