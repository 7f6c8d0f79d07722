"""The probes' labeled train and test data, rebuilt from the run's own `train.dataset`.

A probe needs the data the model was pretrained on, but its train and its test split, without
augmentation and without repeats. Those settings go through gin scopes of the probe's own
(`probe_train`, `probe_test`, `probe`): each is bound for every configurable that the
`train.dataset` reference builds (found by walking gin's references, so the datasets a container
dataset holds get them too: paired members, the source of derived views) and that declares the
setting in its signature, which gin's registry checks. The run's own bindings are never rebound. Data
without a test split is split 80/20, deterministically: by item for per-sample labels, by labeled
token for per-token labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import gin

EVAL_OVERRIDES = {"augment": False, "repeats": 1}  # applied where the dataset takes them
TEST_FRACTION = 0.2


# ---- train.dataset through gin -----------------------------------------------------------------
def scope_of(ref) -> List[str]:
    """The scope a gin reference runs in when it has one of its own (`@test/X()` -> ['test'])."""
    return ref.scoped_selector.split("/")[:-1]


def dataset_reference() -> Tuple[object, List[str]]:
    """(train.dataset's gin reference, the scope it runs in). A shared one (`@name/singleton()`,
    which a recipe uses when its adapter reads the data's width) is looked through to
    its constructor: every split is a new dataset, never the shared one."""
    ref = gin.query_parameter("train.dataset")
    if ref.configurable.name == "singleton":
        outer = ref
        ref = gin.query_parameter(f"{ref.scoped_selector}.constructor")
        return ref, scope_of(ref) or scope_of(outer)
    return ref, scope_of(ref)


def built_configurables(ref, home: List[str]) -> List[Tuple[Tuple[str, ...], str]]:
    """(scope, selector) of `ref` and of every configurable its bindings reference, recursively.
    A reference with a scope of its own runs in that scope (gin replaces the caller's)."""
    found, todo = [], [(tuple(home), ref.selector)]
    while todo:
        scope, selector = todo.pop(0)
        if (scope, selector) in found:
            continue
        found.append((scope, selector))
        bindings = gin.get_bindings("/".join(scope + (selector,)), resolve_references=False)
        for inner in gin.config.iterate_references(bindings):
            todo.append((tuple(scope_of(inner)) or scope, inner.selector))
    return found


def declares(selector: str, name: str) -> bool:
    """Does gin's configurable `selector` take parameter `name` (or any, through **kwargs)?"""
    try:
        gin.config.ParsedBindingKey.parse(f"{selector}.{name}")  # gin: checks the declared signature
    except ValueError:
        return False
    return True


def dataset_takes(name: str) -> bool:
    """Does train.dataset, or a dataset built inside it, take this setting?"""
    ref, home = dataset_reference()
    return any(declares(selector, name) for _, selector in built_configurables(ref, home))


def build_dataset(scope: str, **overrides):
    """train.dataset as configured, built in gin scope `scope` where every configurable it builds
    that declares an override gets it. One that runs in a scope of its own (`@test/X()` inside
    train.dataset) is out of the probe's reach: an error naming it, not a silent training split."""
    ref, home = dataset_reference()
    probe_scope = home + [scope]
    with gin.unlock_config():
        for run_scope, selector in built_configurables(ref, home):
            for key, value in overrides.items():
                if not declares(selector, key):
                    continue
                if list(run_scope) != home:
                    raise ValueError(f"train.dataset builds {'/'.join(run_scope + (selector,))} in a scope of "
                                     f"its own, so the probe cannot set its {key}; bind it unscoped")
                gin.bind_parameter("/".join(probe_scope + [f"{selector}.{key}"]), value)
    with gin.config_scope(probe_scope):
        return ref.configurable.wrapper()


# ---- the splits --------------------------------------------------------------------------------
def same_value(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def same_data(a, b) -> bool:
    """True when two datasets hold the same items (a 'test' split that fell back to train)."""
    from unimask.data import SampleDataset

    if len(a) != len(b):
        return False
    key = (lambda i: (i, 0)) if isinstance(a, SampleDataset) else (lambda i: i)
    return all(same_value(a[key(i)], b[key(i)]) for i in sorted({0, len(a) // 2, len(a) - 1}))


@dataclass
class EvalData:
    """Where train and test rows come from. rows_holdout: one dataset, labeled tokens split 80/20."""
    train: object
    test: object
    train_items: Optional[list]  # item indices of train (None: all of it)
    test_items: Optional[list]
    how: str  # the `data: ...` line
    rows_holdout: bool = False


def peek_labels(model, dataset, device):
    """Labels of the first few items: a [B] or [B, N] tensor (no labels is an error)."""
    from unimask.data import to_device
    from unimask.probe import make_loader, no_labels_error

    batch = to_device(next(iter(make_loader(dataset, range(min(4, len(dataset))), 4))), device)
    labels = model.adapter.labels(batch)
    if labels is None:
        raise no_labels_error(model)
    return labels


def where_from(dataset, fallback: str) -> str:
    """The dataset's own account of its files (`source`), or `fallback`."""
    from unimask.data import SampleDataset

    return SampleDataset.declared(dataset).source or fallback


def eval_data(model, device, seed: int, test_root=None) -> EvalData:
    """Labeled train/test data: a real test split if there is one, else a deterministic 80/20."""
    from unimask.files import NoSplitError
    from unimask.probe import holdout_mask

    if test_root is not None and not dataset_takes("test_root"):
        raise ValueError(f"--test-root: {dataset_reference()[0].selector} has no test_root setting")
    overrides = dict(EVAL_OVERRIDES, **({"test_root": test_root} if test_root is not None else {}))
    if dataset_takes("split"):
        train = build_dataset("probe_train", split="train", **overrides)
        try:
            test = build_dataset("probe_test", split="test", **overrides)
        except NoSplitError as err:
            test, why = None, str(err)
        else:
            why = "its test split holds the training items again"
        if test is not None and not same_data(train, test):
            return EvalData(train, test, None, None, f"train split ({len(train)}) / test split ({len(test)}): "
                                                     f"{where_from(train, 'train')}; {where_from(test, 'test')}")
        print(f"data: no test split ({why}): splitting the training data 80/20", flush=True)
    else:
        train = build_dataset("probe", **EVAL_OVERRIDES)
    labels = peek_labels(model, train, device)
    if labels.dim() == 2:  # [B, N]: per-token labels, split row by row later
        return EvalData(train, train, None, None, "one dataset, labeled tokens split 80/20", rows_holdout=True)
    test_mask = holdout_mask(len(train), TEST_FRACTION, seed)
    train_items, test_items = (~test_mask).nonzero().squeeze(1).tolist(), test_mask.nonzero().squeeze(1).tolist()
    if not train_items or not test_items:
        raise ValueError(f"{len(train)} items cannot be split 80/20 into train and test; add data")
    return EvalData(train, train, train_items, test_items,
                    f"{where_from(train, 'one dataset')}, items split 80/20 ({len(train_items)} / {len(test_items)})")


def loaders(data: EvalData, batch_size: int, num_workers: int = 0, seed: int = 0, shuffle_train: bool = False):
    """(train loader, test loader) over the chosen items."""
    from unimask.probe import make_loader

    shuffle = shuffle_train and not data.rows_holdout  # the row split follows loader order
    return (make_loader(data.train, data.train_items, batch_size, num_workers, shuffle, seed),
            make_loader(data.test, data.test_items, batch_size, num_workers))
