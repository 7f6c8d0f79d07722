"""Train/test splits as users lay them out, and evaluation that says where its numbers come from."""
import os

import numpy as np
import pytest
from PIL import Image

import eval as evaluator
from helpers import ROOT, fast_params, run_train
from modalities.image import ImageDataset
from modalities.points import PointCloudDataset
from modalities.video import VideoDataset
from unimask.files import NoSplitError, list_split_files, take_shots

CLIPS = os.path.join(ROOT, "data", "sample", "video", "clips")


def png(path, value=0, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_split_folders_give_each_split_and_share_class_indices(tmp_path):
    for name in ("a.png", "b.png"):
        png(str(tmp_path / "train" / "cat" / name))
        png(str(tmp_path / "train" / "dog" / name))
    png(str(tmp_path / "test" / "dog" / "c.png"))  # the test split lacks 'cat': dog must stay class 1
    train = ImageDataset(root=str(tmp_path), img_size=8, in_chans=1)
    test = ImageDataset(root=str(tmp_path), img_size=8, in_chans=1, split="test")
    assert len(train) == 4 and sorted(label for _, label, _ in train.items) == [0, 0, 1, 1]
    assert [(os.path.basename(p), label) for p, label, _ in test.items] == [("c.png", 1)]
    assert test.source == f"test: {tmp_path / 'test'}"
    with pytest.raises(NoSplitError, match="split 'val'"):
        ImageDataset(root=str(tmp_path), img_size=8, in_chans=1, split="val")


def test_val_folder_serves_as_test_and_unknown_test_class_is_named(tmp_path):
    png(str(tmp_path / "train" / "cat" / "a.png"))
    png(str(tmp_path / "val" / "cow" / "b.png"))
    with pytest.raises(ValueError, match="'cow' is not among the training classes"):
        ImageDataset(root=str(tmp_path), img_size=8, in_chans=1, split="test")


def test_plain_folder_has_no_test_split_and_test_root_gives_one(tmp_path):
    png(str(tmp_path / "data" / "cat" / "a.png"))
    png(str(tmp_path / "data" / "dog" / "b.png"))
    png(str(tmp_path / "held" / "dog" / "c.png"))
    with pytest.raises(NoSplitError, match="no test split"):
        ImageDataset(root=str(tmp_path / "data"), img_size=8, in_chans=1, split="test")
    test = ImageDataset(root=str(tmp_path / "data"), img_size=8, in_chans=1, split="test",
                        test_root=str(tmp_path / "held"))
    assert [label for _, label, _ in test.items] == [1]


def test_modelnet_layout_keeps_train_and_test_apart(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("chair", "desk"):
        for split, n in (("train", 2), ("test", 1)):
            for i in range(n):
                path = tmp_path / cls / split / f"{cls}_{split}_{i}.xyz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savetxt(path, rng.normal(size=(64, 3)))
    train = PointCloudDataset(root=str(tmp_path), num_points=32)
    test = PointCloudDataset(root=str(tmp_path), num_points=32, split="test")
    assert len(train) == 4 and all("_train_" in p for p, _ in train.items)
    assert len(test) == 2 and [label for _, label in test.items] == [0, 1]


def test_shots_keep_k_items_per_class_of_the_train_split_only(tmp_path):
    """Label-scarce fine-tuning: k items per class, chosen by a hash of the file name (so the
    same ones on every machine and in every listing order), the test split whole."""
    rng = np.random.default_rng(0)
    for cls, n in (("chair", 5), ("desk", 2)):
        for split, count in (("train", n), ("test", 3)):
            for i in range(count):
                path = tmp_path / cls / split / f"{cls}_{split}_{i}.xyz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savetxt(path, rng.normal(size=(16, 3)))
    few = PointCloudDataset(root=str(tmp_path), num_points=8, shots=3)
    labels = [label for _, label in few.items]
    assert labels.count(0) == 3 and labels.count(1) == 2  # a class with fewer keeps all it has
    assert len(PointCloudDataset(root=str(tmp_path), num_points=8, split="test", shots=3)) == 6
    items = [(f"/x/{c}/{i}.npy", c) for c in (0, 1) for i in range(6)] + [("/x/unlabeled.npy", None)]
    chosen = take_shots(items, 2)
    assert len(chosen) == 4 and all(label is not None for _, label in chosen)
    assert sorted(take_shots(items[::-1], 2)) == sorted(chosen)  # not the first k listed
    with pytest.raises(ValueError, match="PointCloudDataset.shots=0"):
        PointCloudDataset(root=str(tmp_path), shots=0)
    with pytest.raises(ValueError, match="no labeled items"):
        take_shots([("/x/a.npy", None)], 1)


def test_shot_episodes_draw_other_items_per_class_the_same_way_every_time(tmp_path):
    """Few-shot results average several draws (episodes) of the k: each episode keeps k per class,
    is the same on every call and in every listing order, and draws a different set than episode 0."""
    items = [(f"/x/{c}/{i}.npy", c) for c in (0, 1, 2) for i in range(12)]
    draws = [sorted(take_shots(items, 2, episode=e)) for e in range(3)]
    for e, draw in enumerate(draws):
        assert [label for _, label in draw].count(0) == 2 and len(draw) == 6
        assert sorted(take_shots(items[::-1], 2, episode=e)) == draw
    assert draws[0] == sorted(take_shots(items, 2))  # episode 0: the draw the table's row always used
    assert draws[1] != draws[0] and draws[2] != draws[0] and draws[1] != draws[2]
    with pytest.raises(ValueError, match="episode=-1"):
        take_shots(items, 2, "PointCloudDataset.shots", episode=-1)
    for i in range(6):
        path = tmp_path / "chair" / "train" / f"chair_{i}.xyz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, np.random.default_rng(i).normal(size=(16, 3)))
    first, other = (PointCloudDataset(root=str(tmp_path), num_points=8, shots=2, episode=e).items for e in (0, 1))
    assert len(first) == len(other) == 2 and first != other
    for bad, words in ((3, "needs PointCloudDataset.shots"), (-1, "count from 0")):
        with pytest.raises(ValueError, match=f"PointCloudDataset.episode={bad}: .*{words}"):
            PointCloudDataset(root=str(tmp_path), num_points=8, shots=None if bad > 0 else 2, episode=bad)


def test_list_files_side_by_side(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    (tmp_path / "val.csv").write_text("b.mp4 1\n")
    items, source = list_split_files(str(tmp_path / "train.csv"), (".mp4",), "test")
    assert items == [(str(tmp_path / "b.mp4"), 1)] and source == f"test: {tmp_path / 'val.csv'}"


def test_npz_without_test_arrays_is_not_its_own_test_split(tmp_path):
    path = str(tmp_path / "x.npz")
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    assert len(ImageDataset(root=path, img_size=8, in_chans=1)) == 4
    with pytest.raises(NoSplitError, match="x_test"):
        ImageDataset(root=path, img_size=8, in_chans=1, split="test")


def test_video_probe_windows_split_only_without_a_test_split(tmp_path):
    kwargs = dict(num_frames=4, sampling_rate=2, img_size=32, augment=False, probe="reverse", clips_per_video=2)
    same = VideoDataset(root=CLIPS, split="test", **kwargs)
    assert same.windows_split and same.window_position(0) == pytest.approx(0.7)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    os.link(os.path.join(CLIPS, "bikes.mp4"), tmp_path / "train" / "a.mp4")
    os.link(os.path.join(CLIPS, "carphone_pristine.mp4"), tmp_path / "test" / "b.mp4")
    own = VideoDataset(root=str(tmp_path), split="test", **kwargs)
    assert not own.windows_split and {os.path.basename(p) for p, *_ in own.items} == {"b.mp4"}


@pytest.fixture(scope="module")
def folder_checkpoint(tmp_path_factory):
    """A smoke image MAE trained on a root/train + root/test ImageFolder (two classes)."""
    base = tmp_path_factory.mktemp("splits")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for cls, mean in (("dark", 60), ("bright", 190)):
            for i in range(n):
                image = np.clip(rng.normal(mean, 30, (32, 32)), 0, 255).astype(np.uint8)
                os.makedirs(base / "data" / split / cls, exist_ok=True)
                Image.fromarray(image).save(base / "data" / split / cls / f"{i}.png")
    workdir = str(base / "run")
    assert run_train(["--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", workdir,
                      *fast_params("train.steps=2", f"ImageDataset.root='{base / 'data'}'")]) == 0
    return base, os.path.join(workdir, "checkpoints", "last.pt")


def test_eval_uses_the_test_folder_and_says_so(folder_checkpoint, capsys):
    base, checkpoint = folder_checkpoint
    assert evaluator.main(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "train split (24) / test split (12)" in out
    assert f"test: {base / 'data' / 'test'}" in out
    held = base / "held" / "bright"  # a test set of one class, elsewhere: labels still follow train's classes
    held.mkdir(parents=True, exist_ok=True)
    for path in (base / "data" / "test" / "bright").iterdir():
        os.link(path, held / path.name) if not (held / path.name).exists() else None
    result = evaluator.evaluate(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "3",
                                 "--test-root", str(base / "held")])
    assert result["n_test"] == 6 and f"test: {base / 'held'}" in result["data"]


def test_eval_without_test_split_says_it_splits_80_20(folder_checkpoint, capsys):
    base, checkpoint = folder_checkpoint
    assert evaluator.main(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "3", "--gin_param",
                           f"ImageDataset.root='{base / 'data' / 'train'}'"]) == 0
    out = capsys.readouterr().out
    assert "no test split" in out and "items split 80/20 (19 / 5)" in out
