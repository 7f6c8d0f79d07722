"""Tar shards (unimask/shards.py, tools/make_shards.py): the same batches, masks and resume as the
folder they were packed from, clear errors for a bad index, and one epoch under torchrun."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, cli, load_tool, read_metrics
from unimask.train import checkpoint as ckpt

IMAGES = "data/sample/images/folder"
RECIPES = {  # modality: (recipe, the root binding of the folder or list file, shards it packs into at 40 KB)
    "image": ("gin/image_mae_cpu.gin", f"ImageDataset.root='{IMAGES}'", 2),
    "video": ("gin/video_mae_cpu.gin", "VideoDataset.root='data/sample/video/train.csv'", 3),
    "audio": ("gin/audio_mae_cpu.gin", "AudioDataset.root='data/sample/audio/digits'", 44),
    "audiovisual": ("gin/av_mae.gin", "AudioVisualDataset.root='data/sample/audiovisual'", 4),
    "satellite": ("gin/sat_mae.gin", "SatelliteDataset.root='data/sample/satellite/tiles'", 10),
    "text": ("gin/text_mlm_cpu.gin", "TextDataset.root='data/sample/text'", 1),  # one .jsonl: one sample
    "points": ("gin/point_mae.gin", "PointCloudDataset.root='data/sample/points'", 8),
}
FAST = ["train.precision='fp32'", "train.progress_bar=False"]


def make_shards(recipe, root_binding, out, shard_size="40KB"):
    """tools/make_shards.py in-process -> the index file."""
    load_tool("make_shards").run(["--gin", recipe, "--gin", "gin/smoke.gin", "--gin_param", root_binding,
                                  "--out", str(out), "--shard-size", shard_size])
    return os.path.join(str(out), "index.json")


def first_batches(recipe, root_binding, n, workers=1):
    """The first n batches the trainer's loader gives, and each one's mask -> [(batch, Mask)]."""
    from unimask.cli import parse_gin, seed_for_init
    from unimask.train.trainer import Trainer, step_seed

    parse_gin([recipe, "gin/smoke.gin"], [root_binding, f"train.num_workers={workers}", *FAST])
    seed_for_init()
    trainer = Trainer()
    assert trainer.loader_kwargs["num_workers"] == workers
    if "index.json" in root_binding:  # the samples really come from the shards
        assert all(type(path).__name__ == "ShardMember" for path, _ in trainer.dataset.files())
    out = []
    for step, batch in zip(range(n), trainer.make_loader(0)):
        batch = {k: v for k, v in batch.items() if k != "n_bad"}
        generator = torch.Generator().manual_seed(step_seed(trainer.seed, step, 0) + 1)
        out.append((batch, trainer.model(batch, generator=generator, mask_only=True).mask))
    return out


def masks_of(mask) -> list:
    return list(mask.values()) if isinstance(mask, dict) else [mask]


@pytest.mark.parametrize("modality", ["image", "video", "audio", "audiovisual", "satellite", "text", "points"])
def test_shards_give_the_folders_batches_and_masks(tmp_path, modality):
    recipe, root_binding, count = RECIPES[modality]
    index = make_shards(recipe, root_binding, tmp_path / "shards")
    assert len(json.load(open(index))["shardlist"]) == count  # several shards, read across their borders
    dataset_name = root_binding.split(".")[0]
    folder = first_batches(recipe, root_binding, 3)
    shards = first_batches(recipe, f"{dataset_name}.root='{index}'", 3)
    assert len(folder) == len(shards) == 3
    for (a, mask_a), (b, mask_b) in zip(folder, shards):
        assert a.keys() == b.keys()
        for key in a:
            if key == "source":  # where each sample came from: the folder's file, the shard's member
                assert [str(x).split("] ")[-1] for x in b[key]] == [os.path.basename(x) for x in a[key]]
                continue
            assert torch.equal(a[key], b[key]), key
        for one, other in zip(masks_of(mask_a), masks_of(mask_b)):  # a multimodal model: one Mask a modality
            assert torch.equal(one.ids_keep, other.ids_keep) and torch.equal(one.masked, other.masked)


def test_shards_are_reproducible_and_read_through_file_urls(tmp_path):
    from modalities.image import ImageDataset

    first = make_shards(*RECIPES["image"][:2], tmp_path / "a")
    second = make_shards(*RECIPES["image"][:2], tmp_path / "b")
    names = sorted(n for n in os.listdir(tmp_path / "a") if n.endswith(".tar"))
    assert names and all(open(tmp_path / "a" / n, "rb").read() == open(tmp_path / "b" / n, "rb").read() for n in names)
    folder, by_url = ImageDataset(root=IMAGES, img_size=16), ImageDataset(root="file://" + first, img_size=16)
    assert len(folder) == len(by_url) == 80 and os.path.exists(second)
    for i in (0, 37, 79):  # across the shards' borders
        a, b = folder[(i, i)], by_url[(i, i)]
        assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]


def test_remote_shards_are_fetched_into_the_wids_cache(tmp_path, monkeypatch):
    """A shard URL the machine must fetch (here a pipe: command, which needs no network; http(s)
    and s3 go through the same wids download) is copied into $WIDS_CACHE once, then read there."""
    from modalities.image import ImageDataset

    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards")
    spec = json.load(open(index))
    for shard in spec["shardlist"]:
        shard["url"] = f"pipe:cp {os.path.join(os.path.dirname(index), shard['url'])} {{local}}"
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps(spec))
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "cache"))
    folder, fetched = ImageDataset(root=IMAGES, img_size=16), ImageDataset(root=str(remote), img_size=16)
    for i in (0, 79):
        assert torch.equal(folder[(i, i)]["image"], fetched[(i, i)]["image"])
    assert len(os.listdir(tmp_path / "cache")) == 2  # both shards, fetched once each


def test_wids_reads_the_shards_as_packed(tmp_path):
    """The shards and index are WebDataset's and wids' own formats: wids' ShardListDataset reads
    them (its own way: it scans each shard) and finds each sample's bytes where unimask reads them."""
    from wids import ShardListDataset

    from modalities.image import ImageDataset
    from unimask.shards import readable

    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards")
    theirs = ShardListDataset(index, cache_dir=str(tmp_path / "cache"), transformations=[])
    ours = ImageDataset(root=index).items
    assert len(theirs) == len(ours) == 80
    for i in (0, 41, 79):
        sample = theirs[i]
        assert sample[".png"].getvalue() == readable(ours[i][0]).read()
        assert json.loads(sample[".json"].getvalue())["label"] == ours[i][1]


@pytest.mark.slow  # ~17 s on 2 cores: three runs of the CLI
def test_resume_from_shards_is_bit_identical(tmp_path):
    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards")
    params = [f"ImageDataset.root='{index}'", "train.num_workers=1", "train.steps=6", *FAST]
    args = ["tools/train.py", "--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for workdir, extra, more in ((straight, [], []), (split, [], ["train.stop_at=3"]), (split, ["--resume"], [])):
        code, output, _ = cli([*args, "--workdir", str(workdir), *extra], params + more)
        assert code == 0, output[-3000:]
    a, b = (ckpt.load_checkpoint(os.path.join(w, "checkpoints", "last.pt")) for w in (straight, split))
    assert b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(split)]


def bad_index(tmp_path, text):
    path = tmp_path / "bad" / "index.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, words", [
    ("not json {", "not JSON"),
    ('{"wids_version": 1, "shardlist": []}', "shardlist"),
    ('{"wids_version": 1, "shardlist": [{"url": "a.tar", "nsamples": 2}], '
     '"unimask": {"names": ["x.png"], "labels": [0], "members": [[512, 1, 1536, 1]]}}', "hold 2 samples"),
    ('{"wids_version": 1, "shardlist": [{"url": "a.tar", "nsamples": 1}], '
     '"unimask": {"names": ["x.png"], "labels": [0], "members": [[512, 1]]}}', "not [file offset"),
    ('{"wids_version": 1, "shardlist": [{"url": "a.tar", "nsamples": 1}], '
     '"unimask": {"names": ["x.png"], "labels": ["cat"], "members": [[512, 1, 1536, 1]]}}', "neither an integer"),
    ('{"wids_version": 1, "shardlist": [{"url": "gone.tar", "nsamples": 1}], '
     '"unimask": {"names": ["x.png"], "labels": [0], "members": [[512, 1, 1536, 1]]}}', "gone.tar does not exist"),
])
def test_a_bad_index_is_an_error_naming_it(tmp_path, text, words):
    from modalities.image import ImageDataset

    path = bad_index(tmp_path, text)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        ImageDataset(root=path)
    assert path in str(err.value) and words in str(err.value)


def test_shards_that_do_not_match_their_index_are_an_error_naming_them(tmp_path):
    from modalities.image import ImageDataset

    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards")
    other = make_shards(*RECIPES["video"][:2], tmp_path / "other")
    os.replace(os.path.join(os.path.dirname(other), "shard-000000.tar"), os.path.join(os.path.dirname(index),
                                                                                      "shard-000000.tar"))
    dataset = ImageDataset(root=index, img_size=16)
    with pytest.raises(RuntimeError, match="shard-000000.tar: (no sample 5|truncated)"):
        dataset[(5, 0)]


def test_a_bad_index_stops_training_with_its_name(tmp_path):
    path = bad_index(tmp_path, '{"shardlist": 3}')
    code, output, _ = cli(["tools/train.py", "--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin", "--workdir",
                           str(tmp_path / "run")], [f"ImageDataset.root='{path}'", *FAST], timeout=120)
    assert code != 0 and path in output and "wids_version" in output


def test_a_shard_index_holds_one_split(tmp_path):
    from modalities.image import ImageDataset
    from unimask.files import NoSplitError

    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards")
    with pytest.raises(NoSplitError, match="holds the train split"):
        ImageDataset(root=index, split="test")
    test = ImageDataset(root=index, split="test", test_root=index)  # given as the test data, it is the test split
    assert len(test) == 80


def test_a_test_split_packed_on_its_own_is_the_test_data(tmp_path):
    """--split test packs the folder's test split (labels by the train split's classes); given as
    test_root beside the train shards it is that split, sample for sample."""
    from modalities.audio.dataset import AudioDataset

    recipe, binding, _ = RECIPES["audio"]
    train = make_shards(recipe, binding, tmp_path / "train")
    load_tool("make_shards").run(["--gin", recipe, "--gin", "gin/smoke.gin", "--gin_param", binding, "--split", "test",
                                  "--out", str(tmp_path / "test")])
    settings = dict(clip_seconds=0.64, target_length=64, num_mel_bins=32, augment=False)
    folder = AudioDataset(root="data/sample/audio/digits", split="test", **settings)
    shards = AudioDataset(root=train, split="test", test_root=str(tmp_path / "test" / "index.json"), **settings)
    assert len(folder) == len(shards) == 80 and [l for _, l in folder.items] == [l for _, l in shards.items]
    for i in (0, 79):
        assert torch.equal(folder[(i, 0)]["fbank"], shards[(i, 0)]["fbank"])


def test_make_shards_refuses_arrays(tmp_path):
    with pytest.raises(ValueError, match="not a file of its own"):
        load_tool("make_shards").run(["--gin", "gin/image_mae_cpu.gin", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="pack each one"):  # a dataset of datasets
        load_tool("make_shards").run(["--gin", "gin/av_digits_mae.gin", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="--shard-size"):
        load_tool("make_shards").run(["--gin", "gin/image_mae_cpu.gin", "--out", str(tmp_path / "s"),
                                      "--shard-size", "big"])


@pytest.mark.slow  # ~12 s on 2 cores: two processes, a worker each
def test_two_ranks_see_every_sample_once_an_epoch_from_an_odd_number_of_shards(tmp_path):
    from test_distributed import free_port

    index = make_shards(*RECIPES["image"][:2], tmp_path / "shards", shard_size="20KB")
    shards = json.load(open(index))["shardlist"]
    assert len(shards) % 2 == 1 and len({s["nsamples"] for s in shards}) > 1  # odd and uneven
    out = tmp_path / "seen.json"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(free_port()), "tests/shard_epoch.py", index, str(out), "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ranks = json.load(open(out))
    seen = [i for rank in ranks for i in rank["seen"]]
    assert sorted(seen) == list(range(80))  # each sample once, across both ranks
    assert all(len(rank["seen"]) == 40 for rank in ranks)  # neither rank starved
    assert all(rank["labels_ok"] for rank in ranks)
    assert not any(rank["opened_in_main"] for rank in ranks)  # shards opened in the workers only
