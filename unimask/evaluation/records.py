"""Finished fine-tunes that a report reads back instead of running again.

A row of many draws (episodes x fine-tune seeds) runs for hours on 2 cores; each finished
fine-tune leaves finetune_result.json in its run directory with a stamp of everything its result
depends on, so a row that was stopped resumes at its first unfinished fine-tune, and a changed
recipe, code, data set or checkpoint runs it again.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from importlib import metadata
from typing import List, Optional

from unimask.configurables import ENTRY_POINT_GROUP

FINETUNE_RECORD = "finetune_result.json"  # written into a fine-tune's run directory once it finished


def code_roots(command: List[str], root: str) -> List[str]:
    """The code a training command runs: its script (the first .py word), unimask and every
    adapter package installed for it (the entry points that register_all loads)."""
    script = [word for word in command if word.endswith(".py")][:1]
    packages = ["unimask"] + [entry.module for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    folders = [location for name in packages
               for location in (importlib.util.find_spec(name).submodule_search_locations or [])]
    return [os.path.relpath(path, root) for path in script + folders]


def finetune_stamp(command: List[str], recipes: List[str], needs: List[str], checkpoint: str, root: str) -> dict:
    """What makes a fine-tune's result: its command, the text of its recipes and of every recipe
    they include, the code that trains (code_roots), the data files the row needs and the
    checkpoint file it may start from (a new pretraining run is another file). Paths are
    relative to `root`, the repository the recipes name files from."""
    info = os.stat(checkpoint)
    code = [path for top in code_roots(command, root) for path in tree_files(top, root) if path.endswith(".py")]
    data = [os.stat(os.path.join(root, path)) for top in needs for path in tree_files(top, root)]
    return {"command": command,
            "recipes": {path: file_sha1(path, root) for path in recipe_closure(recipes, root)},
            "code": hashlib.sha1("".join(file_sha1(path, root) for path in code).encode()).hexdigest(),
            "data": [len(data), sum(st.st_size for st in data), max((st.st_mtime_ns for st in data), default=0)],
            "checkpoint": [os.path.abspath(checkpoint), info.st_size, info.st_mtime_ns]}


def file_sha1(path: str, root: str) -> str:
    with open(os.path.join(root, path), "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def tree_files(top: str, root: str) -> List[str]:
    """Every file under `top` (relative to `root`; a file alone if `top` is one), sorted."""
    start = os.path.join(root, top)
    if os.path.isfile(start):
        return [top]
    return sorted(os.path.relpath(os.path.join(d, name), root) for d, _, names in os.walk(start) for name in names
                  if "__pycache__" not in d)


def recipe_closure(recipes: List[str], root: str) -> List[str]:
    """The gin files and every file they include (gin's `include 'path'` lines), in first-seen order."""
    seen, todo = [], list(recipes)
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        with open(os.path.join(root, path)) as f:
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
