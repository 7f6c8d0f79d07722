"""Sharded kNN (train rows split over torchrun ranks) against the single-process probe, and
the memory-mapped feature store that lets an interrupted extraction resume.

The torchrun test launches 2 real gloo processes with a timeout, as test_distributed.py does.
Features are small integers, so many train rows tie in similarity with a test row: exact equality
of predictions checks the deterministic (-sim, global index) tie rule, not just the easy cases.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from helpers import ROOT
from test_distributed import free_port
from unimask.probe import knn_predict

WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from unimask.probe import knn_predict_sharded, knn_probe_sharded

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = torch.load(sys.argv[1])
    ids = torch.arange(rank, len(data["train_y"]), world)  # a DistributedSampler-like strided split
    test = slice(rank * 23, None if rank == world - 1 else (rank + 1) * 23)  # unequal test shares
    out = {}
    for name, chunk, train_chunk in (("wide", 1024, 8192), ("narrow", 5, 7)):
        out[name] = knn_predict_sharded(data["train_x"][ids], data["train_y"][ids], data["test_x"][test], k=20,
                                        temperature=0.07, num_classes=6, chunk=chunk, train_chunk=train_chunk,
                                        train_ids=ids)
    # rank 1 without test rows (an empty (0, 0) array, as an extraction that found no labeled row gives)
    alone = data["test_x"] if rank == 0 else torch.zeros(0, 0)
    out["alone"] = knn_predict_sharded(data["train_x"][ids], data["train_y"][ids], alone, num_classes=6, chunk=16,
                                       train_ids=ids)
    out["probe"] = knn_probe_sharded(data["train_x"][ids], data["train_y"][ids], data["test_x"][test],
                                     data["test_y"][test], train_ids=ids, chunk=9)
    torch.save(out, f"{sys.argv[2]}.{rank}")
    dist.destroy_process_group()
""")


def sample(seed=0, n_train=157, n_test=61, dim=6, classes=6):
    """Small-integer features (ties in cosine similarity are common) with class-dependent means."""
    gen = torch.Generator().manual_seed(seed)
    train_y, test_y = torch.randint(classes, (n_train,), generator=gen), torch.randint(classes, (n_test,), generator=gen)
    centres = torch.randint(-2, 3, (classes, dim), generator=gen).float()
    train_x = centres[train_y] + torch.randint(-1, 2, (n_train, dim), generator=gen).float()
    test_x = centres[test_y] + torch.randint(-1, 2, (n_test, dim), generator=gen).float()
    train_x[40:50] = train_x[:10]  # exact duplicates: equal similarities from different train rows
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def test_chunk_sizes_do_not_change_predictions():
    data = sample(1)
    base = knn_predict(data["train_x"], data["train_y"], data["test_x"], k=20, num_classes=6)
    for chunk, train_chunk in ((1, 1), (3, 10), (64, 19)):
        pred = knn_predict(data["train_x"], data["train_y"], data["test_x"], k=20, num_classes=6, chunk=chunk,
                           train_chunk=train_chunk)
        assert torch.equal(pred, base), (chunk, train_chunk)


def test_ties_go_to_the_lower_train_index():
    """Two train rows identical to the test row, of different classes, k=1: the first one wins."""
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    for order in ([0, 1, 2], [0, 2, 1]):
        train_y = torch.tensor(order)
        pred = knn_predict(train_x, train_y, torch.tensor([[0.0, 2.0]]), k=1, num_classes=3, train_chunk=1)
        assert int(pred) == order[1]


def test_sharded_knn_under_torchrun_equals_one_process(tmp_path):
    data = sample()
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(tmp_path / "worker.py"), str(tmp_path / "data.pt"), str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    outs = [torch.load(tmp_path / f"out.{rank}") for rank in range(2)]
    expected = knn_predict(data["train_x"], data["train_y"], data["test_x"], k=20, temperature=0.07, num_classes=6)
    for name in ("wide", "narrow"):
        assert torch.equal(torch.cat([o[name] for o in outs]), expected), name
    assert torch.equal(outs[0]["alone"], expected) and len(outs[1]["alone"]) == 0
    accuracy = 100.0 * float((expected == data["test_y"]).float().mean())
    assert outs[0]["probe"] == outs[1]["probe"]
    assert outs[0]["probe"]["n_test"] == len(data["test_y"]) and outs[0]["probe"]["top1_acc"] == pytest.approx(accuracy)


# ---- the feature store: streaming past a memory budget, resuming an interrupted extraction --------
class Items(torch.utils.data.Dataset):
    """Item i -> a 3-float row and a label; a per-token shape is not needed for the store."""

    def __len__(self):
        return 50

    def __getitem__(self, i):
        return {"x": torch.arange(3.0) + 10 * i, "y": torch.tensor(i % 4)}


class Interrupt(Exception):
    pass


def rows_of(loader, stop_after=None, seen=None):
    """feature_batches' contract: (x [R, D], y [R], origin [R, 2]) per batch; label 3 is 'unlabeled'."""
    for b, batch in enumerate(loader):
        if stop_after is not None and b == stop_after:
            raise Interrupt
        if seen is not None:
            seen.extend(batch["x"][:, 0].div(10).long().tolist())
        keep = batch["y"] != 3
        samples = torch.nonzero(keep).squeeze(1)
        yield batch["x"][keep], batch["y"][keep], torch.stack([samples, torch.zeros_like(samples)], 1)


def test_interrupted_extraction_resumes_to_the_same_rows(tmp_path):
    from unimask.probe.store import ITEM_STRIDE, FeatureStore, extract_rows

    items, meta = list(range(0, 50, 2)) + [1, 3], {"what": "test rows"}
    whole_x, whole_y, whole_key = extract_rows(rows_of, Items(), items, batch_size=4)  # in memory
    assert isinstance(whole_x, torch.Tensor) and whole_key.tolist() == [i * ITEM_STRIDE for i in items if i % 4 != 3]

    prefix = str(tmp_path / "features" / "train.r0of1")
    with pytest.raises(Interrupt):  # budget 0: every batch streams to disk; killed at batch 3
        extract_rows(lambda loader: rows_of(loader, stop_after=3), Items(), items, 4, store=FeatureStore(prefix, meta),
                     budget_mb=0)
    with open(prefix + ".x.f32", "ab") as f:  # and half a row of a batch that was being written
        f.write(b"\0" * 6)
    seen = []
    x, y, key = extract_rows(lambda loader: rows_of(loader, seen=seen), Items(), items, 4,
                             store=FeatureStore(prefix, meta), budget_mb=0)
    assert seen == items[12:]  # the 3 complete batches were not loaded again
    assert isinstance(x, np.memmap) and np.array_equal(np.asarray(x), whole_x.numpy())
    assert torch.equal(y, whole_y) and torch.equal(key, whole_key)

    seen.clear()  # finished: a rerun reads the files; another meta starts over
    again = extract_rows(lambda loader: rows_of(loader, seen=seen), Items(), items, 4, store=FeatureStore(prefix, meta))
    assert seen == [] and np.array_equal(np.asarray(again[0]), whole_x.numpy())
    other = extract_rows(lambda loader: rows_of(loader, seen=seen), Items(), items, 4,
                         store=FeatureStore(prefix, {"what": "other"}), budget_mb=0)
    assert seen == items and torch.equal(other[2], whole_key)


def test_rank_shards_cover_every_row_once_and_keys_restore_the_order():
    from unimask.probe.store import extract_rows

    items = list(range(3, 40))
    whole = extract_rows(rows_of, Items(), items, batch_size=5)
    shards = [extract_rows(rows_of, Items(), items, 5, rank=r, world=3) for r in range(3)]
    key = torch.cat([s[2] for s in shards])
    order = key.argsort()
    assert torch.equal(key[order], whole[2])
    assert torch.equal(torch.cat([s[0] for s in shards])[order], whole[0])


# ---- tools/eval.py under torchrun: each rank extracts its share --------------------------------------
PROBE = ["tools/eval.py", "--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin", "--random-init",
         "--gin_param", "ImageDataset.limit=600"]


def probe(tmp_path, name, *args, nproc=1):
    import json

    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    cmd = [sys.executable, *(launch if nproc > 1 else []), *PROBE, *args, "--json", str(tmp_path / f"{name}.json")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((tmp_path / f"{name}.json").read_text()), result.stdout


@pytest.mark.slow
def test_eval_knn_under_torchrun_equals_one_process(tmp_path):
    one, _ = probe(tmp_path, "one", "--protocol", "knn")
    two, out = probe(tmp_path, "two", "--protocol", "knn", "--feature-budget-mb", "0", "--feature-dir",
                     str(tmp_path / "features"), nproc=2)
    assert "over 2 ranks" in out and out.count("top1_acc=") == 1  # rank 0 prints
    assert (two["n_train"], two["n_test"]) == (one["n_train"], one["n_test"])
    assert two["top1_acc"] == pytest.approx(one["top1_acc"], abs=1e-4)  # float32 mean vs exact count: 1 row = 0.17
    assert len(list((tmp_path / "features").glob("*/train.r1of2.x.f32"))) == 1  # streamed past a 0 MB budget


@pytest.mark.slow
def test_eval_linear_under_torchrun_fits_every_ranks_rows(tmp_path):
    one, _ = probe(tmp_path, "one", "--protocol", "linear")
    two, _ = probe(tmp_path, "two", "--protocol", "linear", "--feature-dir", str(tmp_path / "features"), nproc=2)
    assert (two["top1_acc"], two["wd"], two["n_train"]) == (one["top1_acc"], one["wd"], one["n_train"])
