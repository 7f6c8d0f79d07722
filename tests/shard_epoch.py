"""Run under torchrun by tests/test_shards.py: one epoch of a shard-backed dataset through the
trainer's sampler and a DataLoader worker per rank -> OUT (argv[2]) the positions each rank read.

    python -m torch.distributed.run --nproc_per_node 2 tests/shard_epoch.py INDEX OUT MICRO_BATCH
"""
import json
import sys

import torch
import torch.distributed as dist

from modalities.image import ImageDataset
from unimask.data import StepBatchSampler


def main(index: str, out: str, micro: int):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = ImageDataset(root=index, img_size=16, in_chans=1, augment=False)
    reader = dataset.items[0][0].reader
    sampler = StepBatchSampler(len(dataset), micro, seed=3, rank=rank, world=world)
    steps = len(dataset) // (micro * world)  # one epoch (the test picks sizes that divide)
    seen, labels_ok = [], True
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=1)
    for batch, keys in zip(loader, sampler):
        indices = [i for i, _ in keys]
        seen += indices
        labels_ok &= batch["label"].tolist() == [dataset.items[i][1] for i in indices]
        if len(seen) == steps * micro:
            break
    del loader
    gathered = [None] * world
    dist.all_gather_object(gathered, {"seen": seen, "labels_ok": labels_ok,
                                      "opened_in_main": bool(reader._files)})
    if rank == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
