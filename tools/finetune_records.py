"""Finished fine-tunes that tools/report.py reads back instead of running again.

A row of many draws (episodes x fine-tune seeds) runs for hours on 2 cores; each finished
fine-tune leaves finetune_result.json in its run directory with a stamp of everything its result
depends on, so a row that was stopped resumes at its first unfinished fine-tune, and a changed
recipe, code, data set or checkpoint runs it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import List, Optional

from common import ROOT

FINETUNE_RECORD = "finetune_result.json"  # written into a fine-tune's run directory once it finished


def finetune_stamp(command: List[str], recipes: List[str], needs: List[str], checkpoint: str) -> dict:
    """What makes a fine-tune's result: its command, the text of its recipes and of every recipe
    they include, the code that trains (unimask/, modalities/, tools/train.py), the data files the
    row needs and the checkpoint file it may start from (a new pretraining run is another file)."""
    info = os.stat(checkpoint)
    code = [os.path.join("tools", "train.py"), os.path.join("tools", "common.py")]
    code += [path for top in ("unimask", "modalities") for path in tree_files(top) if path.endswith(".py")]
    data = [os.stat(os.path.join(ROOT, path)) for top in needs for path in tree_files(top)]
    return {"command": command, "recipes": {path: file_sha1(path) for path in recipe_closure(recipes)},
            "code": hashlib.sha1("".join(file_sha1(path) for path in code).encode()).hexdigest(),
            "data": [len(data), sum(st.st_size for st in data), max((st.st_mtime_ns for st in data), default=0)],
            "checkpoint": [os.path.abspath(checkpoint), info.st_size, info.st_mtime_ns]}


def file_sha1(path: str) -> str:
    with open(os.path.join(ROOT, path), "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def tree_files(top: str) -> List[str]:
    """Every file under `top` (relative to the repository; a file alone if `top` is one), sorted."""
    root = os.path.join(ROOT, top)
    if os.path.isfile(root):
        return [top]
    return sorted(os.path.relpath(os.path.join(d, name), ROOT) for d, _, names in os.walk(root) for name in names
                  if "__pycache__" not in d)


def recipe_closure(recipes: List[str]) -> List[str]:
    """The gin files and every file they include (gin's `include 'path'` lines), in first-seen order."""
    seen, todo = [], list(recipes)
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        with open(os.path.join(ROOT, path)) as f:
            todo += re.findall(r"^\s*include\s+['\"]([^'\"]+)['\"]", f.read(), flags=re.M)
    return seen


def planned_steps(workdir: str) -> Optional[int]:
    """train.steps as the run's config.gin recorded it (None when it does not say)."""
    try:
        with open(os.path.join(workdir, "config.gin")) as f:
            found = re.search(r"^train\.steps\s*=\s*(\d+)", f.read(), flags=re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def save_finetune(workdir: str, stamp: dict, result: dict):
    """Record a fine-tune's result in its run directory, unless the run stopped short of its
    train.steps (a partial run is no result to read back)."""
    if planned_steps(workdir) in (None, result["steps"]):
        with open(os.path.join(workdir, FINETUNE_RECORD), "w") as f:
            json.dump({"stamp": stamp, "result": result}, f, indent=1)


def finished_finetune(workdir: str, stamp: dict) -> Optional[dict]:
    """The result of a fine-tune that finished in `workdir` with this stamp, or None."""
    try:
        with open(os.path.join(workdir, FINETUNE_RECORD)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record["result"] if record.get("stamp") == stamp else None
