#!/usr/bin/env python
"""Probe what an encoder learned: linear probe, kNN or short fine-tuning on labeled data.

python tools/eval.py --checkpoint runs/x/checkpoints/last.pt --protocol linear|knn|finetune
    [--random-init] [--gin f.gin] [--gin_param 'a.b=1'] [--pool mean|cls|tokens|flatten|max+mean] [--layer K] [--features raw]
python tools/eval.py --gin gin/image_mae_cpu.gin --random-init --protocol linear

The model and data come from the checkpoint's own gin config (`--gin`/`--gin_param` only add
overrides): train.dataset is rebuilt with split='train' / 'test' and augment=False where the
dataset takes them. The test split is the data's own (root/train + root/test folders, ModelNet's
<class>/test, test.csv beside train.csv, x_test in an .npz) or `--test-root PATH`. Data without
one is split 80/20, deterministically: by item for per-sample labels, by labeled token for
per-token labels. The line `data: ...` says where the train and the test rows came from. `--features raw` probes the input itself (baseline). The
last line printed is always `top1_acc=XX.XX`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_trust_pickle, load_errors, model_from_checkpoint, parse_gin, write_json  # noqa: E402

DEFAULT_WDS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
EVAL_OVERRIDES = {"augment": False, "repeats": 1}  # applied where the dataset takes them
TEST_FRACTION = 0.2


def parse_args(argv=None):
    from unimask.probe.features import POOLS  # the probes' own list of poolings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="<run>/checkpoints/last.pt (its config rebuilds the model)")
    add_trust_pickle(parser)
    parser.add_argument("--gin", action="append", default=[], help="gin file, applied after the checkpoint's config")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    parser.add_argument("--protocol", choices=("linear", "knn", "finetune"), default="linear")
    parser.add_argument("--random-init", action="store_true", help="same architecture, untrained weights")
    parser.add_argument("--features", choices=("encoder", "raw"), default="encoder",
                        help="raw = the input tokens themselves, the no-learning baseline")
    parser.add_argument("--pool", choices=POOLS, default=None,
                        help="mean (encoder default), cls, tokens; flatten (raw default) concatenates tokens; "
                             "max+mean: max- and mean-pooled side by side (Point-BERT / Point-MAE set features)")
    parser.add_argument("--norm-stats", choices=("checkpoint", "recompute"), default="checkpoint",
                        help="BatchNorm statistics: the model's own, or recomputed on the probe's train split "
                             "(label-free; an untrained BatchNorm otherwise keeps mean 0 / variance 1)")
    parser.add_argument("--layer", type=int, default=None,
                        help="probe the output of this encoder block (0 = first, -1 = last before the final "
                             "norm) instead of the encoder's output")
    parser.add_argument("--modality", default=None,
                        help="a cross-modal model: the modality whose features are probed (the encoder sees it "
                             "alone), or 'all' (every modality encoded together; each one's mean-pooled features "
                             "side by side unless --pool says otherwise)")
    parser.add_argument("--test-root", default=None,
                        help="a separate test folder or list file (sets the dataset's test_root)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="random init, splits, probe fitting")
    parser.add_argument("--epochs", type=int, default=None,
                        help="L-BFGS iterations (linear, 200) / epochs (finetune, 5)")
    parser.add_argument("--lr", type=float, default=None, help="linear: 1.0 (L-BFGS); finetune: 1e-3")
    parser.add_argument("--wd", type=float, nargs="+", default=None,
                        help=f"linear: L2 strengths, the best on a train slice is used (default {DEFAULT_WDS}); "
                             "finetune: AdamW weight decay (0.05)")
    parser.add_argument("--optimizer", choices=("lbfgs", "adamw"), default="lbfgs", help="linear probe solver")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--vote", choices=("weighted", "majority"), default="weighted")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.checkpoint is None and not args.gin:
        parser.error("give --checkpoint, or --gin with --random-init")
    if args.checkpoint is None and not args.random_init and args.features == "encoder":
        parser.error("without --checkpoint there are no trained weights: add --random-init")
    if args.features == "raw" and args.protocol == "finetune":
        parser.error("--features raw has nothing to fine-tune; use --protocol linear or knn")
    return args


# ---- model -----------------------------------------------------------------------------------
def build_model(args):
    """Model from the checkpoint's config (+ overrides), or from --gin alone; seeded init."""
    import gin
    import torch

    torch.manual_seed(args.seed)
    if args.checkpoint:
        model, _ = model_from_checkpoint(args.checkpoint, args.gin, args.gin_param, load_weights=not args.random_init,
                                         trust_pickle=args.trust_pickle)
        return model
    parse_gin(args.gin, args.gin_param)
    return gin.query_parameter("train.model").scoped_configurable_fn()


# ---- data ------------------------------------------------------------------------------------
def dataset_reference():
    """train.dataset's gin reference; a shared one (`@name/singleton()`, which the graph recipe
    uses so the adapter can read the data's width) is looked through to its constructor."""
    import gin

    ref = gin.query_parameter("train.dataset")
    if ref.configurable.name == "singleton":
        ref = gin.query_parameter(f"{ref.scoped_selector}.constructor")
    return ref


def dataset_classes():
    """Every dataset class (SampleDataset subclasses, registered with gin by their modules)."""
    from unimask.data import SampleDataset

    found, todo = [], [SampleDataset]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def bind_nested(overrides: dict):
    """Bind the overrides for every dataset class that takes them, so datasets built inside
    another (PairedDataset's members, DerivedViews' source) get them too. They stay bound: this
    process only builds evaluation data from here on."""
    import gin

    with gin.unlock_config():
        for cls in dataset_classes():
            params = inspect.signature(cls.__init__).parameters
            for key, value in overrides.items():
                if key in params:
                    try:
                        gin.bind_parameter(f"{cls.__name__}.{key}", value)
                    except ValueError:  # the class is not a gin configurable
                        pass


def build_dataset(**overrides):
    """train.dataset as configured, with the overrides every dataset class in it accepts."""
    ref = dataset_reference()
    params = inspect.signature(ref.configurable.wrapped).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    bind_nested(overrides)
    return ref.scoped_configurable_fn(**{k: v for k, v in overrides.items() if takes_any or k in params})


def dataset_takes(name: str) -> bool:
    """Does train.dataset, or a dataset built inside it, take this setting?"""
    wrapped = dataset_reference().configurable.wrapped
    if name in inspect.signature(wrapped).parameters:
        return True
    container = {"dataset", "datasets"} & set(inspect.signature(wrapped).parameters)
    return bool(container) and any(name in inspect.signature(c.__init__).parameters for c in dataset_classes())


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
    train_items: Optional[list]
    test_items: Optional[list]
    how: str
    rows_holdout: bool = False


def peek_labels(model, dataset, device):
    """Labels of the first few items: None (no labels) or a [B] / [B, N] tensor."""
    from unimask.data import to_device
    from unimask.probe import make_loader, no_labels_error

    batch = to_device(next(iter(make_loader(dataset, range(min(4, len(dataset))), 4))), device)
    labels = model.adapter.labels(batch)
    if labels is None:
        raise no_labels_error(model)
    return labels


def where_from(dataset, fallback: str) -> str:
    return getattr(dataset, "source", None) or fallback


def eval_data(model, device, seed: int, test_root=None) -> EvalData:
    """Labeled train/test data: a real test split if there is one, else a deterministic 80/20."""
    from unimask.files import NoSplitError
    from unimask.probe import holdout_mask

    if test_root is not None and not dataset_takes("test_root"):
        raise ValueError(f"--test-root: {dataset_reference().selector} has no test_root setting")
    overrides = dict(EVAL_OVERRIDES, **({"test_root": test_root} if test_root is not None else {}))
    if dataset_takes("split"):
        train = build_dataset(split="train", **overrides)
        try:
            test = build_dataset(split="test", **overrides)
        except NoSplitError as err:
            test, why = None, str(err)
        else:
            why = "its test split holds the training items again"
        if test is not None and not same_data(train, test):
            return EvalData(train, test, None, None, f"train split ({len(train)}) / test split ({len(test)}): "
                                                     f"{where_from(train, 'train')}; {where_from(test, 'test')}")
        print(f"data: no test split ({why}): splitting the training data 80/20", flush=True)
    else:
        train = build_dataset(**EVAL_OVERRIDES)
    labels = peek_labels(model, train, device)
    if labels.dim() == 2:
        return EvalData(train, train, None, None, "one dataset, labeled tokens split 80/20", rows_holdout=True)
    test_mask = holdout_mask(len(train), TEST_FRACTION, seed)
    train_items, test_items = (~test_mask).nonzero().squeeze(1).tolist(), test_mask.nonzero().squeeze(1).tolist()
    if not train_items or not test_items:
        raise ValueError(f"{len(train)} items cannot be split 80/20 into train and test; add data")
    return EvalData(train, train, train_items, test_items,
                    f"{where_from(train, 'one dataset')}, items split 80/20 ({len(train_items)} / {len(test_items)})")


def loaders(data: EvalData, args, shuffle_train: bool = False):
    from unimask.probe import make_loader

    shuffle = shuffle_train and not data.rows_holdout  # the row split follows loader order
    return (make_loader(data.train, data.train_items, args.batch_size, args.num_workers, shuffle, args.seed),
            make_loader(data.test, data.test_items, args.batch_size, args.num_workers))


# ---- protocols -------------------------------------------------------------------------------
def features(model, data: EvalData, args, device):
    """(train_x, train_y, test_x, test_y) for the linear / kNN probes."""
    from unimask.probe import extract_features, extract_raw, holdout_mask

    side_by_side = args.features == "raw" or getattr(model, "features_per_modality", False)  # --modality all
    pool = args.pool or ("flatten" if side_by_side else "mean")
    if args.features == "raw":
        if args.layer is not None:
            raise ValueError("--layer picks an encoder block; --features raw has none")
        extract = extract_raw
    else:
        extract = functools.partial(extract_features, layer=args.layer)
    train_loader, test_loader = loaders(data, args)
    if args.norm_stats == "recompute" and args.features == "encoder":
        from unimask.probe import recompute_norm_stats

        print(f"norm stats: {recompute_norm_stats(model, train_loader, device)} BatchNorm layers recomputed "
              "on the train split", flush=True)
    if data.rows_holdout:
        x, y = extract(model, train_loader, device, pool=pool)
        test = holdout_mask(len(y), TEST_FRACTION, args.seed)
        return x[~test], y[~test], x[test], y[test]
    train_x, train_y = extract(model, train_loader, device, pool=pool)
    test_x, test_y = extract(model, test_loader, device, pool=pool)
    return train_x, train_y, test_x, test_y


def label_stats(model, loader, device):
    """(number of classes, number of labeled rows) from one pass over the labels only."""
    from unimask.data import to_device
    from unimask.probe import no_labels_error

    top, rows = -1, 0
    for batch in loader:
        labels = model.adapter.labels(to_device(batch, device))
        if labels is None:
            raise no_labels_error(model)
        top, rows = max(top, int(labels.max())), rows + int((labels >= 0).sum())
    if rows == 0:
        raise no_labels_error(model)
    return top + 1, rows


def run_finetune(model, data: EvalData, args, device) -> dict:
    from unimask.probe import HoldOutLabels, finetune, holdout_mask

    train_loader, test_loader = loaders(data, args, shuffle_train=True)
    classes, rows = label_stats(model, train_loader, device)
    labels_fn = test_labels_fn = None
    if data.rows_holdout:
        test_rows = holdout_mask(rows, TEST_FRACTION, args.seed)
        labels_fn = HoldOutLabels(model.adapter.labels, test_rows, "train")
        test_labels_fn = HoldOutLabels(model.adapter.labels, test_rows, "test")
    else:
        classes = max(classes, label_stats(model, test_loader, device)[0])
    return finetune(model, train_loader, test_loader, device, classes, epochs=args.epochs or 5,
                    lr=args.lr or 1e-3, wd=args.wd[0] if args.wd else 0.05, pool=args.pool or "mean",
                    seed=args.seed, labels_fn=labels_fn, test_labels_fn=test_labels_fn)


@contextlib.contextmanager
def one_thread():
    """Probe fits are many tiny matmuls: one thread beats two (no sync), above all on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def choose_modality(model, name: str):
    """Point a cross-modal model's features (and the raw baseline) at one modality or all."""
    names = getattr(model, "names", None)
    if names is None:
        raise ValueError(f"--modality: {type(model).__name__} has one modality; --modality is for cross-modal models")
    if name != "all" and name not in names:
        raise ValueError(f"--modality {name!r}: the model's modalities are {names} (or 'all')")
    model.feature_modalities = tuple(names) if name == "all" else (name,)
    model.features_per_modality = name == "all"


def evaluate(argv=None) -> dict:
    """Everything main() does, returned as a dict (for tools/report.py)."""
    from unimask.probe import knn_probe, linear_probe
    from unimask.train.precision import resolve_device

    args = parse_args(argv)
    device = resolve_device(args.device)
    model = build_model(args).to(device)
    if args.modality is not None:
        choose_modality(model, args.modality)
    data = eval_data(model, device, args.seed, args.test_root)
    print(f"data: {data.how}", flush=True)
    if args.protocol == "finetune":
        result = run_finetune(model, data, args, device)
    else:
        train_x, train_y, test_x, test_y = features(model, data, args, device)
        print(f"features: train {tuple(train_x.shape)}, test {tuple(test_x.shape)}", flush=True)
        with one_thread():
            if args.protocol == "linear":
                result = linear_probe(train_x, train_y, test_x, test_y, epochs=args.epochs or 200, lr=args.lr or 1.0,
                                      wd=args.wd or DEFAULT_WDS, optimizer=args.optimizer, seed=args.seed)
            else:
                result = knn_probe(train_x, train_y, test_x, test_y, args.k, args.temperature, args.vote)
        result.update(n_train=len(train_y), n_test=len(test_y), dim=train_x.shape[1])
    result.update(protocol=args.protocol, features=args.features, random_init=args.random_init,
                  checkpoint=args.checkpoint, data=data.how, **({"modality": args.modality} if args.modality else {}))
    if args.json:
        write_json(args.json, result)
    return result


def main(argv=None) -> int:
    from unimask.probe import NoLabelsError

    try:
        result = evaluate(argv)
    except (NoLabelsError, *load_errors()) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                        if k not in ("top1_acc", "checkpoint", "data"))
    print(details)
    print(f"top1_acc={result['top1_acc']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
