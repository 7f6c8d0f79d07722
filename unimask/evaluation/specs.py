"""The rows of a results table as data: one Spec per row, read from a JSON file.

The table of rows names recipes, data sets and modalities, so it is data beside the recipes
(gin/report_specs.json), not code in the core: this module only knows what a row is. A row may
start as a copy of an earlier one (`"like": "<key>"`) and replace some of its fields, so rows
that share data and recipe say so once.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class Spec:
    """One row: what to pretrain, the data it needs and how to probe it."""
    key: str
    data: str  # the table's Data cell
    recipe: List[str]  # gin files of the pretraining run
    needs: List[str] = field(default_factory=list)  # data files that must exist (the recipe files always must)
    params: List[str] = field(default_factory=list)  # extra gin bindings for pretraining
    protocol: str = "linear"
    pool: str = "mean"
    layer: Optional[int] = None  # probe this encoder block's output (ProbeOptions.layer) instead of the top
    eval_params: List[str] = field(default_factory=list)  # gin bindings for the probes only
    raw_pool: Optional[str] = None  # how the raw-input baseline pools tokens (default: flatten)
    how: str = ""  # how to get `needs` when they are missing
    probe_options: dict = field(default_factory=dict)  # more ProbeOptions fields ({"modality": ...})
    finetune: Optional[str] = None  # a fine-tuning recipe: the row fine-tunes (from pretrained vs random init)
    finetune_params: List[str] = field(default_factory=list)  # its bindings (steps)
    pretrained_by: Optional[str] = None  # the row whose pretraining run (same seed and budget) this row reuses
    episode_binding: Optional[str] = None  # few-shot rows: the binding that picks a draw of the k shots
    episodes: int = 1  # how many draws the row averages (--episodes overrides)
    # fine-tune rows: fine-tune seeds over the one pretraining checkpoint (None: the pretraining
    # seed alone; --finetune-seeds sets them), so a gain can be told from fine-tune noise
    finetune_seeds: Optional[List[int]] = None
    note: str = ""  # why the row is as it is (documentation only)

    def required(self) -> List[str]:
        return list(self.recipe) + list(self.needs)

    def copy(self) -> "Spec":
        return copy.deepcopy(self)


FIELDS = {f.name for f in dataclasses.fields(Spec)}


def specs_from(rows: List[dict], option_names=None) -> Dict[str, Spec]:
    """{key: Spec} from row dicts in table order. `like` copies an earlier row (all but its key
    and note); an unknown field, a repeated key or an unknown `like` is an error naming the row.
    option_names: the fields probe_options may set (ProbeOptions'), checked here, not mid-report."""
    specs: Dict[str, Spec] = {}
    for row in rows:
        row = dict(row)
        key, like = row.get("key"), row.pop("like", None)
        unknown = sorted(set(row) - FIELDS)
        if unknown:
            raise ValueError(f"report row {key!r}: unknown field(s) {unknown}; a row has {sorted(FIELDS)} and 'like'")
        if key in specs:
            raise ValueError(f"report row {key!r} appears twice")
        if like is not None and like not in specs:
            raise ValueError(f"report row {key!r}: like={like!r} names no earlier row")
        base = dataclasses.asdict(specs[like]) if like else {}
        base.pop("note", None)
        spec = Spec(**{**base, **row})
        bad = sorted(set(spec.probe_options) - set(option_names or spec.probe_options))
        if bad:
            raise ValueError(f"report row {key!r}: probe_options {bad} are not probe options")
        specs[key] = spec
    return specs


def load_specs(path: str, option_names=None) -> Dict[str, Spec]:
    """The rows of the JSON file at `path`: {"rows": [{field: value}, ...]}."""
    with open(path) as f:
        return specs_from(json.load(f)["rows"], option_names)
