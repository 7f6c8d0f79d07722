"""One probe of one model: linear, kNN or short fine-tuning on the run's own labeled data.

`evaluate(ProbeOptions(...))` is what `python tools/eval.py` does and what a report row calls for
each of its three numbers (random init, pretrained, raw input); it returns the result as a dict
whose `top1_acc` is the figure. The model comes from a checkpoint's own gin config (gin files and
bindings only add overrides) or from gin files alone (a random-init baseline); the data from the
run's train.dataset (probe_data.py); the fits from unimask/probe/.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional


DEFAULT_WDS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class ProbeOptions:
    """What to probe and how (tools/eval.py's flags, one field each, same names)."""
    checkpoint: Optional[str] = None  # <run>/checkpoints/last.pt (its config rebuilds the model)
    trust_pickle: bool = False
    gin: List[str] = field(default_factory=list)  # gin files, after the checkpoint's config
    gin_param: List[str] = field(default_factory=list)  # gin bindings
    protocol: str = "linear"  # linear | knn | finetune
    random_init: bool = False  # same architecture, untrained weights
    features: str = "encoder"  # encoder | raw (the input tokens: the no-learning baseline)
    pool: Optional[str] = None  # None: mean (encoder), flatten (raw, or one row per modality)
    norm_stats: str = "checkpoint"  # checkpoint | recompute (BatchNorm statistics of the probe's train split)
    layer: Optional[int] = None  # probe this encoder block's output instead of the encoder's
    modality: Optional[str] = None  # a cross-modal model: one modality's features, or 'all'
    test_root: Optional[str] = None  # a separate test folder or list file (the dataset's test_root)
    batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0  # random init, splits, probe fitting
    epochs: Optional[int] = None  # L-BFGS iterations (linear, 200) / epochs (finetune, 5)
    lr: Optional[float] = None  # linear: 1.0 (L-BFGS); finetune: 1e-3
    wd: Optional[List[float]] = None  # linear: L2 strengths to choose from (DEFAULT_WDS); finetune: [0.05]
    optimizer: str = "lbfgs"  # the linear probe's solver: lbfgs | adamw
    k: int = 20
    temperature: float = 0.07
    vote: str = "weighted"  # weighted | majority
    feature_budget_mb: float = 2048.0  # probe rows held in memory; past it they stream to feature_dir (resumable)
    feature_dir: Optional[str] = None  # None: <run>/features beside the checkpoint (no checkpoint: memory only)

    def problem(self) -> Optional[str]:
        """Why these options cannot run, or None."""
        if self.checkpoint is None and not self.gin:
            return "give --checkpoint, or --gin with --random-init"
        if self.checkpoint is None and not self.random_init and self.features == "encoder":
            return "without --checkpoint there are no trained weights: add --random-init"
        if self.features == "raw" and self.protocol == "finetune":
            return "--features raw has nothing to fine-tune; use --protocol linear or knn"
        if self.feature_budget_mb < 0:
            return "--feature-budget-mb must be >= 0"
        return None


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(ProbeOptions))


def build_model(options: ProbeOptions):
    """The checkpoint's model (+ overrides), or one from the gin files alone; seeded init."""
    import gin
    import torch

    from unimask.cli import parse_gin
    from unimask.weights.build import model_from_checkpoint

    torch.manual_seed(options.seed)
    if options.checkpoint:
        return model_from_checkpoint(options.checkpoint, options.gin, options.gin_param,
                                     load_weights=not options.random_init, trust_pickle=options.trust_pickle)[0]
    parse_gin(options.gin, options.gin_param)
    return gin.query_parameter("train.model").scoped_configurable_fn()


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


def run_finetune(model, data, options: ProbeOptions, device) -> dict:
    """A few epochs of encoder + head, end to end, on the train rows; top-1 on the test rows."""
    from unimask.evaluation.probe_data import TEST_FRACTION, loaders
    from unimask.probe import HoldOutLabels, finetune, holdout_mask

    train_loader, test_loader = loaders(data, options.batch_size, options.num_workers, options.seed,
                                        shuffle_train=True)
    classes, rows = label_stats(model, train_loader, device)
    labels_fn = test_labels_fn = None
    if data.rows_holdout:
        test_rows = holdout_mask(rows, TEST_FRACTION, options.seed)
        labels_fn = HoldOutLabels(model.adapter.labels, test_rows, "train")
        test_labels_fn = HoldOutLabels(model.adapter.labels, test_rows, "test")
    else:
        classes = max(classes, label_stats(model, test_loader, device)[0])
    return finetune(model, train_loader, test_loader, device, classes, epochs=options.epochs or 5,
                    lr=options.lr or 1e-3, wd=options.wd[0] if options.wd else 0.05, pool=options.pool or "mean",
                    seed=options.seed, labels_fn=labels_fn, test_labels_fn=test_labels_fn)


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


def torch_device(kind: str, index: int):
    import torch

    torch.cuda.set_device(index)
    return torch.device(kind, index)


def fit_probe(model, data, options: ProbeOptions, device, info) -> dict:
    """Linear or kNN probe on the rows of every rank: kNN sharded over the ranks (same predictions
    as one process), the linear fit on rank 0 over every rank's rows, its result sent to all."""
    import torch

    from unimask.evaluation.probe_rows import all_rows, in_memory, large_data_note, split_rows
    from unimask.probe import knn_probe, knn_probe_sharded, linear_probe
    from unimask.train.distributed import barrier

    train, test = split_rows(model, data, options, device, info.rank, info.world)
    sizes = torch.tensor([len(train.y), len(test.y)])
    if info.world > 1:  # gloo: CPU tensors; NCCL: this rank's GPU
        sizes = sizes.to(device)
        torch.distributed.all_reduce(sizes)
        sizes = sizes.cpu()
    dim = int(train.x.shape[1])
    if info.is_main:
        print(f"features: train {(int(sizes[0]), dim)}, test {(int(sizes[1]), dim)}"
              + (f" over {info.world} ranks" if info.world > 1 else ""), flush=True)
    with one_thread():
        if options.protocol == "knn":
            if info.world > 1:
                result = knn_probe_sharded(train.x, train.y, test.x, test.y, options.k, options.temperature,
                                           options.vote, train_ids=train.key)
            else:
                result = knn_probe(train.x, train.y, test.x, test.y, options.k, options.temperature, options.vote)
        else:
            note = large_data_note(int(sizes[0]))
            if note and info.is_main:
                print(note, flush=True)
            barrier(info)  # every rank's rows are on disk
            result = None
            if info.is_main:
                train, test = all_rows(options, "train", info.world, train), all_rows(options, "test", info.world, test)
                result = linear_probe(in_memory(train.x), train.y, in_memory(test.x), test.y,
                                      epochs=options.epochs or 200, lr=options.lr or 1.0, wd=options.wd or DEFAULT_WDS, optimizer=options.optimizer, seed=options.seed)
            if info.world > 1:
                box = [result]
                torch.distributed.broadcast_object_list(box, src=0)
                result = box[0]
    result.update(n_train=int(sizes[0]), n_test=int(sizes[1]), dim=dim)
    return result


def evaluate(options: ProbeOptions) -> dict:
    """Build the model and its probe data, run the protocol -> {'top1_acc', sizes, what ran}.
    Under torchrun every rank calls it and gets the same result (probe_rows.py: who extracts what)."""
    import torch.distributed as dist

    from unimask.train.distributed import init_distributed
    from unimask.train.precision import resolve_device

    problem = options.problem()
    if problem:
        raise ValueError(problem)
    device = resolve_device(options.device)
    joined = dist.is_available() and dist.is_initialized()  # a caller's group is the caller's to end
    info = init_distributed(device)  # torchrun: each rank extracts its share of the items
    try:
        if info.world > 1 and device.type == "cuda":
            device = torch_device("cuda", info.local_rank)
        return probe(options, device, info)
    finally:
        if info.world > 1 and not joined:
            dist.destroy_process_group()


def probe(options: ProbeOptions, device, info) -> dict:
    from unimask.evaluation.probe_data import eval_data

    if info.world > 1 and options.protocol == "finetune":
        raise ValueError("--protocol finetune runs in one process; fine-tune at scale with a recipe "
                         "(gin/finetune_image.gin) under tools/train.py")
    model = build_model(options).to(device)
    if options.modality is not None:
        model.probe_modalities(options.modality)  # a cross-modal model's features: one modality, or all
    data = eval_data(model, device, options.seed, options.test_root)
    if info.is_main:
        print(f"data: {data.how}", flush=True)
    if options.protocol == "finetune":
        result = run_finetune(model, data, options, device)
    else:
        result = fit_probe(model, data, options, device, info)
    result.update(protocol=options.protocol, features=options.features, random_init=options.random_init,
                  checkpoint=options.checkpoint, data=data.how, **({"modality": options.modality}
                                                                  if options.modality else {}))
    return result
