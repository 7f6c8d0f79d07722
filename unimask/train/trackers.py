"""Experiment trackers beside metrics.jsonl: `train.loggers = ('tensorboard', 'wandb', 'mlflow')`.

Each tracker gets the run's gin config (its bindings as parameters, the whole config as a file), every
metric row MetricsLog writes, every evaluation figure and, with `trackers.log_checkpoint=True`,
the final checkpoint as an artifact. Only rank 0 logs (MetricsLog is disabled elsewhere). The
libraries' own settings decide where things go: WANDB_MODE (offline, disabled), WANDB_DIR (else
the run's workdir), WANDB_PROJECT / WANDB_ENTITY, MLFLOW_TRACKING_URI (sqlite:///, a server,
databricks), MLFLOW_EXPERIMENT_NAME. A resumed run continues the same tracker run: the ids are
kept in <workdir>/trackers.json, written when a fresh run starts. Steps a killed run logged after
its last checkpoint are logged again by the resumed run (metrics.jsonl drops them; W&B ignores a
step below its last one, MLflow keeps both values).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from typing import Dict, Optional

import gin

EXTRAS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}  # logger -> (module, pip extra)
KNOWN = ("tensorboard", *EXTRAS)


class TrackerError(ValueError):
    """train.loggers names an unknown tracker or one whose package is missing."""


def check_loggers(loggers) -> tuple:
    """train.loggers -> a tuple of names; TrackerError for an unknown name or a tracker whose
    package is not installed (named with the extra that installs it), before any step runs."""
    names = (loggers,) if isinstance(loggers, str) else tuple(loggers)
    for name in names:
        if name not in KNOWN:
            raise TrackerError(f"train.loggers: unknown logger {name!r} (known: {', '.join(KNOWN)})")
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            raise TrackerError(f"train.loggers has {name!r} but the {EXTRAS[name][0]} package is not installed: "
                               f"pip install 'unimask[{EXTRAS[name][1]}]'")
    return names


@gin.configurable("trackers")
def tracker_settings(project: str = "unimask", run_name: Optional[str] = None, log_checkpoint: bool = False) -> dict:
    """project: the W&B project / MLflow experiment (WANDB_PROJECT, MLFLOW_EXPERIMENT_NAME win);
    run_name: default the workdir's name; log_checkpoint: upload the final checkpoint (it can be
    large) when the run ends without an error."""
    return dict(project=project, run_name=run_name, log_checkpoint=log_checkpoint)


def config_params(config: str) -> Dict[str, str]:
    """gin.config_str() -> {'Scope/Name.param': 'value'} (a value continued on indented lines is
    joined); comments, imports and includes left out."""
    params, key = {}, None
    for line in config.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "import ", "include ")):
            continue
        if line[0].isspace() and key is not None:  # gin writes a long value as 'key = \' + indented lines
            params[key] = f"{params[key]} {line.strip()}".strip()
        elif " = " in line:
            key, value = line.split(" = ", 1)
            key = key.strip()
            params[key] = value.strip().rstrip("\\").strip()
    return params


def open_trackers(names, workdir: str, config: str, resumed_at: int) -> list:
    """The trackers named (tensorboard is MetricsLog's own), each continuing the run recorded in
    <workdir>/trackers.json when resumed_at > 0, else starting a new one and recording it."""
    path = os.path.join(workdir, "trackers.json")
    ids = {}
    if resumed_at and os.path.exists(path):
        with open(path) as f:
            ids = json.load(f)
    settings = tracker_settings()
    name = settings["run_name"] or os.path.basename(os.path.abspath(workdir))
    trackers = [{"wandb": WandbTracker, "mlflow": MlflowTracker}[n](workdir, name, settings, config, ids.get(n),
                                                                   resumed_at)
                for n in names if n in EXTRAS]
    if trackers:
        from unimask.train.workdir import replace_file

        replace_file(path, json.dumps({**ids, **{t.kind: t.run_id for t in trackers}}, indent=2))
    return trackers


class WandbTracker:
    kind = "wandb"

    def __init__(self, workdir: str, name: str, settings: dict, config: str, run_id: Optional[str], resumed_at: int):
        import wandb

        self.wandb, self.log_checkpoint = wandb, settings["log_checkpoint"]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", settings["project"]), name=name,
                              id=run_id, resume="allow" if run_id else None,
                              dir=None if os.environ.get("WANDB_DIR") else workdir, config=config_params(config))
        if run_id:
            self.run.config.update(config_params(config), allow_val_change=True)  # a resume may change settings
        self.run_id = self.run.id
        self.run.save(self.config_file(workdir, config, resumed_at), base_path=workdir, policy="now")

    @staticmethod
    def config_file(workdir: str, config: str, step: int) -> str:
        path = os.path.join(workdir, "trackers", f"config_step_{step}.gin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(config)
        return path

    def metrics(self, row: dict):
        self.run.log({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}, step=row["step"])

    def figure(self, tag: str, png_path: str, step: int):
        self.run.log({tag: self.wandb.Image(png_path)}, step=step)

    def close(self, finished: bool, checkpoint: Optional[str]):
        """checkpoint: the final checkpoint's path, None when the run stopped before its end."""
        if finished and self.log_checkpoint and checkpoint:
            artifact = self.wandb.Artifact(f"checkpoint-{self.run_id}", type="model")
            (artifact.add_dir if os.path.isdir(checkpoint) else artifact.add_file)(checkpoint)
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if finished else 1)


class MlflowTracker:
    kind = "mlflow"

    def __init__(self, workdir: str, name: str, settings: dict, config: str, run_id: Optional[str], resumed_at: int):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client, self.log_checkpoint = MlflowClient(), settings["log_checkpoint"]  # MLFLOW_TRACKING_URI
        params = config_params(config)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            params = {k: v for k, v in params.items() if k not in self.client.get_run(run_id).data.params}
        else:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", settings["project"])
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        self.run_id = run_id
        items = [Param(k[:250], v[:6000]) for k, v in params.items()]  # MLflow's key / value limits
        for start in range(0, len(items), 100):  # at most 100 parameters per call
            self.client.log_batch(run_id, params=items[start:start + 100])
        self.client.log_text(run_id, config, f"config/config_step_{resumed_at}.gin")

    def metrics(self, row: dict):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, row["step"]) for k, v in row.items()
                 if k != "step" and isinstance(v, (int, float))]
        self.client.log_batch(self.run_id, metrics=items)

    def figure(self, tag: str, png_path: str, step: int):
        self.client.log_artifact(self.run_id, png_path, tag)

    def close(self, finished: bool, checkpoint: Optional[str]):
        if finished and self.log_checkpoint and checkpoint:
            if os.path.isdir(checkpoint):
                self.client.log_artifacts(self.run_id, checkpoint, "checkpoint")
            else:
                self.client.log_artifact(self.run_id, checkpoint, "checkpoint")
        # a run stopped early (preempted, train.stop_at) is KILLED until a resume completes it
        self.client.set_terminated(self.run_id, "FAILED" if not finished else "FINISHED" if checkpoint else "KILLED")
