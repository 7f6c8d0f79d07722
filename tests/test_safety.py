"""Issue 45, tried as a new user would: files from elsewhere never run code, no run overwrites or
interleaves with another, a full disk ends cleanly, and a resume names what changed.

Each attack file is written by the test itself; its payload would create a sentinel file, and
the test checks that the sentinel is not there. Runs are the CLI as a subprocess with a timeout.
"""
import argparse
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import RECIPE, ROOT, WORKERS, cli, read_metrics, train_cli, write_pngs
from unimask.safe_config import UnsafeConfigError, check_stored_config
from unimask.train import checkpoint as ckpt
from unimask.weights.load import WeightsError, read_file

SHORT = ["train.steps=4", "train.ckpt_every=2", "train.eval_every=2", "train.log_every=1"]


class Payload:
    """Unpickling this creates `path`: proof that a load ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run (checkpoints at steps 2 and 4) on a folder of 12 PNGs -> (run, data)."""
    base = tmp_path_factory.mktemp("finished")
    data = base / "data"
    write_pngs(str(data), [f"img{i:02d}.png" for i in range(12)])
    code, out, _ = train_cli(base / "run", f"ImageDataset.root='{data}'", *SHORT)
    assert code == 0, out
    return base / "run", data


def copy_run(finished, tmp_path):
    run, data = finished
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "run", data


# ---- files from outside are data ------------------------------------------------------------
def test_init_from_refuses_a_pickled_payload(tmp_path):
    sentinel, weights = tmp_path / "ran", tmp_path / "weights.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(str(sentinel))}, weights)
    code, out, seconds = train_cli(tmp_path / "run", f"train.init_from='{weights}'", "train.steps=1")
    assert code != 0 and not sentinel.exists(), out
    assert str(weights) in out and "train.init_trust_pickle=True" in out, out[-2000:]
    assert "Traceback" not in out and seconds < 60
    read_file(str(weights), trust_pickle=True)  # the explicit opt-in is a full unpickle
    assert sentinel.exists()


def test_published_checkpoint_with_argparse_args_loads(tmp_path):
    """MAE's and VideoMAE's checkpoints pickle their command-line arguments beside the weights."""
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}, "args": argparse.Namespace(mask_ratio=0.75, lr=None),
                "epoch": 799}, path)
    obj = read_file(str(path))
    assert obj["args"].mask_ratio == 0.75 and obj["epoch"] == 799


def test_tools_refuse_a_pickled_checkpoint(finished, tmp_path):
    sentinel, path = tmp_path / "ran", tmp_path / "last.pt"
    state = torch.load(finished[0] / "checkpoints" / "last.pt", weights_only=True)
    state["note"] = Payload(str(sentinel))
    torch.save(state, path)
    for tool in (["tools/eval.py", "--checkpoint", str(path)], ["tools/export.py", "--checkpoint", str(path),
                                                                  "--out", str(tmp_path / "x.pth")]):
        code, out, _ = cli(tool)
        assert code == 2 and not sentinel.exists(), out[-2000:]
        assert str(path) in out and "--trust-pickle" in out and "Traceback" not in out, out[-2000:]
    with pytest.raises(ckpt.CheckpointError, match="--trust-pickle"):
        ckpt.load_checkpoint(str(path))


STORED_CONFIG_ATTACKS = [
    ("from __gin__ import dynamic_registration\nimport os\nos.system.command = 'touch {s}'\n"
     "train.model = @os.system()\n"),
    "import os\n",
    "include '/etc/passwd'\n",
    "train.model = @os.system()\n",
    "eval/os.system.command = 'touch {s}'\n",
    "X = @print()\n",
]


@pytest.mark.parametrize("attack", STORED_CONFIG_ATTACKS)
def test_stored_config_binds_only_registered_configurables(attack):
    from unimask.configurables import register_all

    register_all()
    with pytest.raises(UnsafeConfigError, match="ckpt.pt"):
        check_stored_config(attack.format(s="/tmp/x"), "ckpt.pt")


def test_a_stored_config_cannot_opt_in_to_pickles_or_lift_size_limits():
    """Bindings of registered configurables, but ones only the user may set: they go back to
    their defaults after a stored config is parsed."""
    import gin

    from unimask.configurables import register_all
    from unimask.safe_config import reset_safety_bindings

    register_all(extra_modules=("modalities",))
    stored = ("GraphDataset.trust_pickle = True\ntrain.init_trust_pickle = True\n"
              "ImageDataset.max_pixels = None\nImageDataset.img_size = 28\n")
    gin.clear_config()
    gin.parse_config(stored)
    assert sorted(reset_safety_bindings(stored)) == ["GraphDataset.trust_pickle", "ImageDataset.max_pixels",
                                                     "train.init_trust_pickle"]
    assert gin.query_parameter("GraphDataset.trust_pickle") is False
    assert gin.query_parameter("ImageDataset.max_pixels") == 8192 * 8192
    assert gin.query_parameter("ImageDataset.img_size") == 28  # everything else as stored
    gin.clear_config()


def test_a_checkpoint_config_that_would_run_code_is_refused(finished, tmp_path):
    sentinel, path = tmp_path / "ran", tmp_path / "last.pt"
    state = torch.load(finished[0] / "checkpoints" / "last.pt", weights_only=True)
    check_stored_config(state["config"], "own")  # a real run's config passes
    state["config"] = STORED_CONFIG_ATTACKS[0].format(s=sentinel) + state["config"]
    torch.save(state, path)  # tensors only: the weights-only reader takes it
    code, out, _ = cli(["tools/eval.py", "--checkpoint", str(path)])
    assert code == 2 and not sentinel.exists(), out[-2000:]
    assert "imports a module" in out and str(path) in out, out[-2000:]
    from unimask.models.masked import MaskedModel

    with pytest.raises(UnsafeConfigError):
        MaskedModel.from_checkpoint(str(path))
    assert not sentinel.exists()


def test_sharded_checkpoint_metadata_that_would_run_code_is_refused(tmp_path):
    """torch DCP unpickles `.metadata` fully: it is read as data first."""
    import pickle

    import torch.distributed.checkpoint as dcp

    sentinel, folder = tmp_path / "ran", tmp_path / "last.pt"
    dcp.save({"model": {"w": torch.zeros(2)}}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"step": 1, "config": ""}, folder / "meta.pt")
    assert ckpt.load_checkpoint(str(folder), meta_only=True)["step"] == 1  # DCP's own metadata passes
    with open(folder / ".metadata", "wb") as f:
        pickle.dump({"x": Payload(str(sentinel))}, f)
    with pytest.raises(ckpt.CheckpointError, match="--trust-pickle"):
        ckpt.load_checkpoint(str(folder))
    assert not sentinel.exists()


def test_a_sharded_checkpoints_bytes_item_that_would_run_code_is_refused(tmp_path):
    """DCP stores non-tensor values (optimizer settings) as bytes items and torch.load()s each one
    with weights_only=False: they are read as data first."""
    import torch.distributed.checkpoint as dcp

    sentinel, folder = tmp_path / "ran", tmp_path / "last.pt"
    dcp.save({"model": {"w": torch.zeros(2)}, "optimizer": {"param_groups": [{"lr": 0.1, "x": Payload(str(sentinel))}]}},
             checkpoint_id=str(folder), no_dist=True)
    torch.save({"step": 1, "config": ""}, folder / "meta.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"item optimizer\.param_groups\.0\.x.*--trust-pickle"):
        ckpt.load_checkpoint(str(folder))
    assert not sentinel.exists()


def test_own_checkpoints_are_plain_data(finished):
    """Written by this version: readable by torch's weights-only reader with nothing allowed extra."""
    state = torch.load(finished[0] / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and isinstance(state["config"], str) and state["data"]["size"] == 12


def test_checkpoint_of_the_previous_version_still_resumes(finished, tmp_path):
    """Before v3 numpy's RNG key was saved as an array (a pickled numpy global)."""
    run, data = copy_run(finished, tmp_path)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    kind, key, pos, has_gauss, cached = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, key.numpy().astype("uint32"), pos, has_gauss, cached)
    del state["data"]["size"], state["data"]["fingerprint"]
    torch.save(state, last)
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, "train.steps=5", extra=["--resume"])
    assert code == 0 and "resumed from" in out, out[-3000:]
    assert [r["step"] for r in read_metrics(str(run))] == [1, 2, 3, 4, 5]


# ---- no run overwrites or interleaves with another ----------------------------------------------
def test_second_run_into_a_busy_workdir_fails_and_a_killed_runs_lock_is_reclaimed(finished, tmp_path):
    data, run = finished[1], tmp_path / "run"
    params = sum((["--gin_param", p] for p in WORKERS + [f"ImageDataset.root='{data}'", "train.steps=100000",
                                                         "train.ckpt_every=100000"]), [])
    first = subprocess.Popen([sys.executable, "tools/train.py", *RECIPE, "--workdir", str(run), *params], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 60
        while not (run / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended early"
        code, out, seconds = train_cli(run, f"ImageDataset.root='{data}'", *SHORT)
        assert code != 0 and "in use by another run" in out and f"pid {first.pid}" in out, out[-2000:]
        assert seconds < 30
    finally:
        first.kill()  # SIGKILL: no chance to clean up, the kernel drops its lock
        first.wait(timeout=30)
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, extra=["--resume", "auto"])
    assert code == 0, out[-3000:]
    assert [r["step"] for r in read_metrics(str(run))] == [1, 2, 3, 4]  # the killed run's rows are gone


def test_a_finished_run_is_never_overwritten(finished, tmp_path):
    run, data = copy_run(finished, tmp_path)
    before = {p: sha(run / p) for p in ("checkpoints/last.pt", "checkpoints/prev.pt", "metrics.jsonl", "config.gin")}
    code, out, seconds = train_cli(run, f"ImageDataset.root='{data}'", *SHORT)
    assert code != 0 and "--resume" in out and "--overwrite" in out and str(run) in out, out[-2000:]
    assert seconds < 60 and "Traceback" not in out
    assert {p: sha(run / p) for p in before} == before
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, "train.seed=1", extra=["--overwrite"])
    assert code == 0, out[-2000:]
    assert [r["step"] for r in read_metrics(str(run))] == [1, 2, 3, 4]
    assert sha(run / "checkpoints" / "last.pt") != before["checkpoints/last.pt"]


def test_full_disk_keeps_the_last_checkpoint_and_resume_works(finished, tmp_path):
    run, data = copy_run(finished, tmp_path)
    limit = 200_000  # bytes: the small files fit, a checkpoint does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    assert os.path.getsize(run / "checkpoints" / "last.pt") > limit
    params = sum((["--gin_param", p] for p in WORKERS + [f"ImageDataset.root='{data}'", *SHORT, "train.steps=6"]), [])
    result = subprocess.run([sys.executable, "tools/train.py", *RECIPE, "--workdir", str(run), "--resume", *params],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=small_files,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = result.stdout + result.stderr
    assert result.returncode != 0 and result.returncode != -signal.SIGXFSZ, out[-3000:]
    assert "out of space" in out and str(run / "checkpoints") in out and "Traceback" not in out, out[-3000:]
    assert sorted(os.listdir(run / "checkpoints")) == ["last.pt", "prev.pt"]  # no temp file left
    assert ckpt.load_checkpoint(str(run / "checkpoints" / "last.pt"))["step"] == 4
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, "train.steps=6", extra=["--resume"])
    assert code == 0, out[-3000:]
    assert ckpt.load_checkpoint(str(run / "checkpoints" / "last.pt"))["step"] == 6


# ---- resume says what changed ----------------------------------------------------------------
def test_resume_lists_changed_settings_and_keeps_the_first_config(finished, tmp_path):
    run, data = copy_run(finished, tmp_path)
    first = (run / "config.gin").read_text()
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, "train.steps=5", "train.base_lr=0.01",
                             extra=["--resume"])
    assert code == 0, out[-3000:]
    assert "train.base_lr: 0.02 -> 0.01" in out and "train.steps: 4 -> 5" in out, out[-3000:]
    assert (run / "config.gin").read_text() == first
    assert "train.base_lr = 0.01" in (run / "config.resumed_4.gin").read_text()


def test_resume_on_changed_data_is_an_error_unless_allowed(finished, tmp_path):
    run, data = copy_run(finished, tmp_path)
    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer)
    for name in ("img00.png", "img01.png"):
        os.remove(fewer / name)
    code, out, _ = train_cli(run, f"ImageDataset.root='{data}'", *SHORT, "train.steps=5",
                             f"ImageDataset.root='{fewer}'", extra=["--resume"])
    assert code != 0 and "12 samples then, 10 now" in out and "train.allow_data_change=True" in out, out[-3000:]
    renamed = tmp_path / "renamed"
    shutil.copytree(data, renamed)
    os.rename(renamed / "img00.png", renamed / "img99.png")
    code, out, _ = train_cli(run, *SHORT, "train.steps=5", f"ImageDataset.root='{renamed}'", extra=["--resume"])
    assert code != 0 and "file list differs" in out, out[-3000:]
    code, out, _ = train_cli(run, *SHORT, "train.steps=5", f"ImageDataset.root='{fewer}'",
                             "train.allow_data_change=True", extra=["--resume"])
    assert code == 0 and "data set changed" in out, out[-3000:]


def test_weights_error_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="broken.pth"):
        read_file(str(path))


def test_a_deflated_torch_file_is_refused_before_it_expands(tmp_path):
    """torch.load inflates deflated members; torch.save never writes them, so a file that declares
    far more than its size is a bomb."""
    import zipfile

    from unimask.safe_load import UnsafeFileError, check_expansion

    plain, bomb = tmp_path / "plain.pt", tmp_path / "bomb.pt"
    torch.save({"w": torch.zeros(2_000_000)}, plain)
    check_expansion(plain, slack=0)  # a torch.save file unpacks to its own size
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(UnsafeFileError, match="bomb.pt declares"):
        check_expansion(bomb, slack=0)


def test_a_broadcast_view_memory_bomb_is_refused(tmp_path):
    """A stride-0 view saves a few bytes that claim gigabytes; the first copy would allocate them."""
    path = tmp_path / "bomb.pth"
    torch.save({"model": {"pos_embed": torch.zeros(1).expand(2**28)}}, path)
    assert os.path.getsize(path) < 10_000
    with pytest.raises(WeightsError, match="broadcast view"):
        read_file(str(path))
