"""Data plumbing shared by every modality: seeded samples, bad-file skips, and the
step-indexed sampler that makes resume exact (file discovery and splits: unimask/files.py).

Every sample is drawn as (index, seed): the seed fixes its augmentation wherever it is
decoded (any worker, any worker count), and the sampler derives both from the global
sample position, so a run resumed at step k sees exactly the samples it would have seen.
"""
from __future__ import annotations

import random
import warnings
from typing import Iterable

import numpy as np
import torch



def to_device(batch, device, non_blocking: bool = False, drop=("n_bad",)):
    """Move tensors (in dicts, lists or objects with .to, e.g. PyG batches) to the device; the
    data loader's bookkeeping keys (`n_bad`, counted by the trainer first) are left behind."""
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking, drop) for k, v in batch.items() if k not in drop}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking, drop) for v in batch)
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):  # torch: tensors and PyG batches
        return batch.to(device, non_blocking=non_blocking)
    return batch


def seed_everything(seed: int):
    """Seed python, numpy and torch in this process (a worker or the main one)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def naming(where: str, err: Exception) -> str:
    """An error message that names the sample first and once: `where: message`. Decoding
    libraries often put the path in their own words too ("cannot identify image file '...'"):
    it is taken out there, so the path reads once, at the start."""
    message = str(err)
    if message.startswith(where):
        return message
    return f"{where}: " + message.replace(f"'{where}'", "").replace(where, "").replace("  ", " ").strip(" :")


class SampleDataset(torch.utils.data.Dataset):
    """Base for modality datasets: `load(i) -> dict` is the subclass's job.

    Indexing with (i, seed) seeds the augmentation. A file that fails to load raises an error
    naming it; with skip_bad_samples=True the next file is taken instead, a warning is logged
    and the sample carries `n_bad` so the trainer counts skips.
    """

    samples_per_item = 1  # several samples drawn from one decoded file (repeated sampling)
    skip_bad_samples = False
    items: list = []  # one (path, label, ...) tuple per sample, filled by the subclass
    classes = None  # names of string labels, index = class id (sorted over the train split); None: ints
    collate = None  # a batch-building function of the subclass's own (graphs, ragged cubes); None: torch's
    source = ""  # where the items came from ('train: root/train, 600 files'), for the probes' `data:` line

    @staticmethod
    def declared(dataset):
        """`dataset` itself, or this base class for a plain torch Dataset: either way it answers
        samples_per_item, collate and classes (with this class's defaults), so no one has to ask."""
        return dataset if isinstance(dataset, SampleDataset) else SampleDataset

    def __len__(self):
        return len(self.items)

    def describe(self, index: int) -> str:
        return str(self.items[index][0])

    def files(self) -> list:
        """The files the samples are read from, [(path, label|None)] in listing order, for
        tools/make_shards.py: the items' files, each once (several items may read one file);
        a dataset whose items are not files (pieces cut from them) lists its files itself."""
        return list({item[0]: (item[0], item[1]) for item in self.items}.values())

    def file_metadata(self, path: str) -> dict:
        """What decoding `path` needs from outside the file (JSON-able; {} for most data), for
        tools/make_shards.py to pack beside its bytes: a shard member has no folder around it to
        look such files up in (unimask/shards.py: packed_metadata)."""
        return {}

    def root_files(self) -> list:
        """Files the root holds beside its samples that this dataset reads (statistics of the
        data), which tools/make_shards.py copies beside the shards' index, where the same
        dataset looks for them when the index is its root."""
        return []

    def load(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            seed_everything(seed)
        n_bad = 0
        for attempt in range(min(len(self), 100)):
            i = (index + attempt) % len(self)
            try:
                sample = self.load(i)
                sample["n_bad"] = sample.get("n_bad", 0) + n_bad  # a container's members count their own
                return sample
            except Exception as err:
                if not self.skip_bad_samples:
                    raise RuntimeError(naming(self.describe(i), err)) from err
                n_bad += 1
                warnings.warn(f"skipping bad sample: {naming(self.describe(i), err)}")
        raise RuntimeError(f"{n_bad} consecutive bad samples from {self.describe(index)} on; giving up")


class StepBatchSampler(torch.utils.data.Sampler):
    """Endless micro-batches of (index, seed) for one process, starting at a global position.

    The global batch of step s covers sample positions [start + s*G, start + (s+1)*G) with
    G = world * accum * micro_batch; global micro-batch j = rank * accum + m takes the j-th
    contiguous chunk of it. So 2 processes x 1 micro-batch and 1 process x 2 accumulated
    micro-batches see the same samples in the same chunks. Position p maps to epoch p // n
    and a per-epoch seeded permutation; cycling means a recipe runs even on a data set
    smaller than one batch.
    """

    def __init__(self, n: int, micro_batch: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1, accum: int = 1, shuffle: bool = True):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.micro_batch, self.seed, self.start = n, micro_batch, seed, start
        self.rank, self.world, self.accum, self.shuffle = rank, world, accum, shuffle
        self._perm_epoch, self._perm = None, None

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen).tolist(), epoch
        return self._perm[offset]

    def __iter__(self) -> Iterable[list]:
        global_batch = self.world * self.accum * self.micro_batch
        base = self.start
        while True:
            for micro in range(self.accum):
                first = base + (self.rank * self.accum + micro) * self.micro_batch
                yield [(self.index_at(p), (self.seed * 7_919 + p) % (2**62)) for p in range(first, first + self.micro_batch)]
            base += global_batch
