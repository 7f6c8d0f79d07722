"""train.loggers: W&B (offline, its run folder read back) and MLflow (a local sqlite:/// store read
back through MlflowClient) get the config, every metric row, the evaluation figures and the final
checkpoint; a resumed run continues the same tracker run. Needs the [wandb] / [mlflow] extras
(each test skips without its package); the refusals need neither."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from helpers import ROOT, SMOKE, cli, fast_params, read_metrics, run_train

RUN = ["--gin", "gin/image_mae_cpu.gin", "--gin", SMOKE]
STEPS = ("train.steps=4", "train.log_every=1", "train.eval_every=2", "trackers.log_checkpoint=True")


def train_twice(workdir: str, logger: str) -> str:
    """Stop at step 2 (as a preemption would), resume to 4 -> the tracker run id both runs used."""
    params = fast_params(*STEPS, f"train.loggers=('{logger}',)")
    assert run_train([*RUN, "--workdir", workdir, *params, "--gin_param", "train.stop_at=2"]) == 0
    with open(os.path.join(workdir, "trackers.json")) as f:
        first = json.load(f)[logger]
    assert run_train([*RUN, "--workdir", workdir, *params, "--resume"]) == 0
    with open(os.path.join(workdir, "trackers.json")) as f:
        assert json.load(f)[logger] == first  # the resumed run continued the same tracker run
    assert [row["step"] for row in read_metrics(workdir)] == [1, 2, 3, 4]
    return first


def wandb_records(path: str) -> list:
    """The records of an offline run's .wandb file (W&B's LevelDB-style log: 32 KiB blocks of
    records with a 7-byte header: crc32, length, type full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def finished_records(path: str, wait_s: float = 30) -> list:
    """wandb_records once the file holds the run's exit record: W&B's service process writes the
    file and may still be flushing it when run.finish() has returned."""
    deadline = time.time() + wait_s
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_offline_run_logs_everything_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'unimask[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_PROJECT", "issue51")
    run_id = train_twice(str(tmp_path / "run"), "wandb")
    folders = sorted(glob.glob(str(tmp_path / "wandb_dir" / "wandb" / f"offline-run-*-{run_id}")))
    assert len(folders) == 2  # one folder per start, both the same W&B run (synced into one)
    steps, config, artifacts, figures = {}, {}, [], []
    for folder in folders:
        for record in finished_records(os.path.join(folder, f"run-{run_id}.wandb")):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.run_id == run_id and record.run.project == "issue51"
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                steps.setdefault(int(row["_step"]), set()).update(row)
            elif kind == "artifact":
                artifacts.append((record.artifact.type, [entry.path for entry in record.artifact.manifest.contents]))
        figures += glob.glob(os.path.join(folder, "files", "media", "images", "recon_*.png"))
    assert sorted(steps) == [1, 2, 3, 4] and all({"loss", "lr", "grad_norm"} <= keys for keys in steps.values())
    assert {"eval_loss", "recon/path"} <= steps[2] and {"eval_loss", "recon/path"} <= steps[4]
    assert len(figures) == 2
    assert config["train.steps"] == "4" and config["MaskedModel.encoder"] == "@ViTEncoder()"
    assert artifacts == [("model", ["last.pt"])]  # the final checkpoint, once, at the end
    assert os.path.exists(os.path.join(folders[0], "files", "trackers", "config_step_0.gin"))


@pytest.mark.slow  # 10-20 s on 2 cores: MLflow creates its sqlite schema (alembic migrations) first
def test_mlflow_sqlite_run_logs_everything_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'unimask[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="MLflow's sqlite store needs sqlalchemy: pip install 'unimask[mlflow]'")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    client.create_experiment("unimask", artifact_location=str(tmp_path / "artifacts"))  # not in the cwd
    run_id = train_twice(str(tmp_path / "run"), "mlflow")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.steps"] == "4" and run.data.params["MaskedModel.encoder"] == "@ViTEncoder()"
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert sorted(m.step for m in client.get_metric_history(run_id, "eval_loss")) == [2, 4]
    by_step = {m.step: m.value for m in history}
    assert by_step[4] == pytest.approx(read_metrics(str(tmp_path / "run"))[-1]["loss"])

    def listed(path):
        return sorted(os.path.basename(a.path) for a in client.list_artifacts(run_id, path))

    assert listed("recon") == ["step_2.png", "step_4.png"] and listed("checkpoint") == ["last.pt"]
    assert listed("config") == ["config_step_0.gin", "config_step_2.gin"]


def test_a_missing_tracker_package_names_the_extra(monkeypatch):
    from unimask.train import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(trackers.TrackerError, match=r"pip install 'unimask\[mlflow\]'"):
        trackers.check_loggers(("tensorboard", "mlflow"))
    assert trackers.check_loggers("tensorboard") == ("tensorboard",)


def test_an_unknown_logger_fails_the_cli_before_training(tmp_path):
    code, output, _ = cli(["tools/train.py", *RUN, "--workdir", str(tmp_path / "run")], ["train.loggers=('tensorboard', 'comet')",
                                                                       "train.num_workers=0"])
    assert code == 1 and "train.loggers: unknown logger 'comet'" in output
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_config_bindings_become_parameters():
    from unimask.train.trackers import config_params

    text = "import modalities\n# a comment\ntrain.steps = 4\nMaskedModel.encoder = @ViTEncoder()\n" \
           "test/ImageDataset.split = 'test'\ntrain.betas = \\\n    (0.9, 0.95)\n"
    assert config_params(text) == {"train.steps": "4", "MaskedModel.encoder": "@ViTEncoder()",
                                   "test/ImageDataset.split": "'test'", "train.betas": "(0.9, 0.95)"}


@pytest.mark.slow  # ~25 s: a real 2-process torchrun
def test_only_rank_0_logs_to_the_tracker(tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'unimask[wandb]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = ["train.steps=2", "train.batch_size=4", "train.num_workers=0", "train.precision='fp32'",
              "train.progress_bar=False", "train.log_every=1", "train.loggers=('wandb',)"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "tools/train.py", *RUN, "--workdir", str(tmp_path / "run"), *sum((["--gin_param", p] for p in params), [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline",
                                   WANDB_DIR=str(tmp_path / "wandb_dir")))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    folders = glob.glob(str(tmp_path / "wandb_dir" / "wandb" / "offline-run-*"))
    assert len(folders) == 1  # one W&B run for the job, not one per rank
    history = [r for r in finished_records(glob.glob(os.path.join(folders[0], "run-*.wandb"))[0])
               if r.WhichOneof("record_type") == "history"]
    assert len(history) == 2
