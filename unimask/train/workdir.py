"""The run directory's guards: one run per workdir, no run overwrites another, and a resume
says what changed since the checkpoint.

    RunLock(workdir)                 a POSIX lock (fcntl.lockf) on <workdir>/.lock, pid and host in it
    check_fresh_start(workdir, ...)  a fresh run into a workdir with checkpoints: refused or cleared
    config_changes(saved, current)   the bindings that differ between two gin config texts
    data_identity(dataset)           {'size', 'fingerprint'} of the data, saved in every checkpoint

The kernel releases the lock when its process dies however it dies, so a lock left by a killed run
is reclaimed by the next run without anyone deleting a file. It is a POSIX record lock (lockf),
not an flock: an flock is shared with every process forked while it is held (DataLoader workers),
which outlive a SIGKILLed trainer by seconds and would keep the workdir locked; a POSIX lock
belongs to the one process that took it (and works on NFS).
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import socket
import time
import warnings

from gin import config_parser

from unimask.train.durable import remove

# what a run writes into its workdir: --overwrite removes exactly these
RUN_FILES = ("checkpoints", "metrics.jsonl", "recon", "tb", "config.gin", "run.json")


class WorkdirError(RuntimeError):
    """The workdir is in use, or holds a run this command would overwrite."""


class DataChangedError(RuntimeError):
    """The data set differs from the one the checkpoint was trained on."""


class RunLock:
    """Holds <workdir>/.lock for this process's lifetime. A second run into the same workdir fails
    at once, naming the holder. Nothing else in this process may open and close the file: closing
    any descriptor of it drops a POSIX lock."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        try:  # O_NOFOLLOW: a .lock that is a link (a run directory from elsewhere) writes nowhere else
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise WorkdirError(f"{self.path} cannot be opened as this run's lock file ({err}); is it a link?") from None
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self.holder()
            os.close(self.fd)
            raise WorkdirError(f"{workdir} is in use by another run ({holder}): wait for it to end, or give this "
                               "run another --workdir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                info = json.load(f)
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # the file stays: removing it would let two runs lock two different files
            self.fd = None


def has_checkpoints(workdir: str) -> bool:
    folder = os.path.join(workdir, "checkpoints")
    return any(os.path.exists(os.path.join(folder, name)) for name in ("last.pt", "prev.pt")) or \
        bool(glob.glob(os.path.join(folder, "step_*.pt")))


def check_fresh_start(workdir: str, overwrite: bool):
    """A run that starts from step 0 in a workdir holding checkpoints would replace them: refused,
    naming --resume and --overwrite; with overwrite, the old run's files are removed first."""
    if not has_checkpoints(workdir):
        return
    if not overwrite:
        raise WorkdirError(f"{workdir} holds the checkpoints of an earlier run: continue it with --resume, start "
                           "over with --overwrite (its checkpoints and metrics are deleted), or give this run "
                           "another --workdir")
    resumed_configs = glob.glob(os.path.join(workdir, "config.resumed_*.gin"))
    for path in [os.path.join(workdir, name) for name in RUN_FILES] + resumed_configs:
        remove(path)


def binding_values(text: str) -> dict:
    """'scope/Name.arg' -> the value as written, for every binding of a gin config text."""

    class Keep(config_parser.ParserDelegate):
        def configurable_reference(self, name, evaluate):
            return f"@{name}{'()' if evaluate else ''}"

        def macro(self, name):
            return f"%{name}"

    values = {}
    for statement in config_parser.ConfigParser(text, Keep()):
        if isinstance(statement, config_parser.BindingStatement):
            scope = f"{statement.scope}/" if statement.scope else ""
            key = f"{scope}{statement.selector}" + (f".{statement.arg_name}" if statement.arg_name else "")
            values[key] = repr(statement.value)
    return values


def config_changes(saved: str, current: str) -> list:
    """['train.base_lr: 0.0015 -> 0.003', ...]: bindings added, removed or changed."""
    old, new = binding_values(saved), binding_values(current)
    return [f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def data_identity(dataset) -> dict:
    """The data set's size and a fingerprint of its sample list (each sample's description: file
    path, and index within the file where one file holds several), so a resume can tell that the
    data grew, shrank or changed under the saved data position."""
    from unimask.data import SampleDataset

    if not isinstance(dataset, SampleDataset):  # a plain torch Dataset: its size is all we know
        return {"size": len(dataset), "fingerprint": None}
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        digest.update(dataset.describe(index).encode() + b"\n")
    return {"size": len(dataset), "fingerprint": digest.hexdigest()[:16]}


def check_data(saved: dict, current: dict, checkpoint: str, allow_change: bool):
    """DataChangedError when the checkpoint's data identity differs from the current one (a
    checkpoint from before v3 has none: nothing to compare), unless allow_change."""
    if "size" not in saved or (saved["size"] == current["size"] and saved.get("fingerprint") == current["fingerprint"]):
        return
    what = (f"{saved['size']} samples then, {current['size']} now" if saved["size"] != current["size"]
            else f"the same {current['size']} samples in number, but the file list differs")
    if allow_change:
        warnings.warn(f"the data set changed since {checkpoint} was saved ({what}); continuing "
                      "(train.allow_data_change=True)")
        return
    raise DataChangedError(f"the data set changed since {checkpoint} was saved ({what}): the saved data position "
                           "would map to other samples. Resume with the original data, or set "
                           "train.allow_data_change=True to continue on purpose")


def keep_original_config(workdir: str, config: str, step: int):
    """config.gin is the run's first config; a resumed run's goes beside it as config.resumed_<step>.gin."""
    first = os.path.join(workdir, "config.gin")
    path = first if step == 0 or not os.path.exists(first) else os.path.join(workdir, f"config.resumed_{step}.gin")
    replace_file(path, config)


def replace_file(path: str, text: str):
    """Write `text` to a new file and rename it over `path`: a link at `path` (a run directory
    handed over by someone else) is replaced, never written through."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

