"""Data loading: real formats, sampler semantics, and bad input named clearly."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modalities.image import ImageDataset
from modalities.video import VideoDataset, VideoReader
from unimask.data import StepBatchSampler
from unimask.files import list_files

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "sample")
CLIPS = os.path.join(SAMPLE, "video", "clips")


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labels_and_channel_conversion(tmp_path):
    write_png(str(tmp_path / "cat" / "a.png"), np.zeros((20, 20), np.uint8))  # gray -> RGB
    write_png(str(tmp_path / "dog" / "b.png"), np.zeros((20, 20, 4), np.uint8))  # RGBA -> RGB
    ds = ImageDataset(root=str(tmp_path), img_size=16, in_chans=3)
    samples = [ds[(i, 0)] for i in range(len(ds))]
    assert [s["label"] for s in samples] == [0, 1]
    assert all(s["image"].shape == (3, 16, 16) for s in samples)


def test_sample_npz_splits():
    path = os.path.join(SAMPLE, "images", "fashion_mnist.npz")
    train = ImageDataset(root=path, img_size=28, in_chans=1, split="train", augment=False)
    test = ImageDataset(root=path, img_size=28, in_chans=1, split="test", augment=False)
    assert len(train) == 4000 and len(test) == 1000
    sample = test[(0, 0)]
    assert sample["image"].shape == (1, 28, 28) and 0 <= sample["label"] < 10


def test_wrong_channel_count_names_the_file(tmp_path):
    write_png(str(tmp_path / "rgb.png"), np.zeros((8, 8, 3), np.uint8))
    ds = ImageDataset(root=str(tmp_path), img_size=8, in_chans=1)
    with pytest.raises(RuntimeError, match=r"rgb\.png.*3 channels"):
        ds[(0, 0)]


def test_corrupt_image_raises_or_is_skipped_and_counted(tmp_path):
    write_png(str(tmp_path / "good.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match=r"bad\.png"):
        ImageDataset(root=str(tmp_path), img_size=8, in_chans=1)[(0, 0)]
    ds = ImageDataset(root=str(tmp_path), img_size=8, in_chans=1, skip_bad_samples=True)
    with pytest.warns(UserWarning, match=r"bad\.png"):
        sample = ds[(0, 0)]
    assert sample["n_bad"] == 1 and sample["image"].shape == (1, 8, 8)


def test_empty_folder_and_missing_root_are_named(tmp_path):
    with pytest.raises(ValueError, match="holds no files"):
        ImageDataset(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope"):
        VideoDataset(root=str(tmp_path / "nope"))


def test_sample_clips_decode_with_both_backends():
    path = os.path.join(CLIPS, "bikes.mp4")
    reader = VideoReader(path, "av")
    frames, count = reader.get(np.arange(len(reader))), len(reader)
    assert frames.ndim == 4 and frames.shape[-1] == 3 and count >= 61
    ds = VideoDataset(root=os.path.join(SAMPLE, "video", "train.csv"), num_frames=4, sampling_rate=2, img_size=32)
    assert len(ds) == 4 and [item[1] for item in ds.items] == [0, 1, 2, 3]
    for backend in ("decord", "av"):
        ds.backend = backend
        torch.manual_seed(0)
        sample = ds[(1, 7)]
        assert sample["video"].shape == (3, 4, 32, 32) and sample["label"] == 1


def test_pyav_reader_decodes_only_up_to_the_last_wanted_frame():
    """The PyAV fallback gives decord's frames at the same indices without holding a decoded
    video, and a window past the decodable frames is an error that says so."""
    path = os.path.join(CLIPS, "bikes.mp4")
    fallback, reference = VideoReader(path, "av"), VideoReader(path, "decord")
    assert len(fallback) == len(reference) == 64 and not hasattr(fallback, "frames")
    indices = np.array([9, 3, 3, 40])  # any order, repeats allowed
    assert np.array_equal(fallback.get(indices), reference.get(indices))
    with pytest.raises(ValueError, match="only 64 decodable frames, the clip needs frame 70"):
        fallback.get(np.array([1, 70]))


def test_repeated_sampling_gives_several_clips():
    ds = VideoDataset(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32, repeats=3)
    assert ds[(0, 1)]["video"].shape == (3, 3, 4, 32, 32)
    two = VideoDataset(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32, repeats=2)
    for seed in range(8):  # windows that overlap, and windows that do not (their frames then read as one run)
        assert two[(1, seed)]["video"].shape == (2, 3, 4, 32, 32)


def test_repeats_decode_once_and_each_repeat_is_its_own_window(monkeypatch):
    """Repeated sampling reads every repeat's frames in one decoder call, and each clip is the
    frames of its own window (not a copy of the first)."""
    from modalities import video

    calls = []
    real_get = video.VideoReader.get

    def counting_get(self, indices):
        calls.append(np.asarray(indices).copy())
        return real_get(self, indices)

    monkeypatch.setattr(video.VideoReader, "get", counting_get)
    ds = VideoDataset(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32, repeats=3, augment=False)
    clips = ds[(0, 1)]["video"]  # [3, C, T, S, S]; no augmentation: all windows start at the centre
    assert len(calls) == 1 and np.all(np.diff(calls[0]) > 0)  # one call, sorted, no frame twice
    assert torch.equal(clips[0], clips[1]) and torch.equal(clips[1], clips[2])
    calls.clear()
    ds = VideoDataset(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32, repeats=3, probe="reverse",
                      augment=False)
    played, reversed_ = ds[(0, 1)]["video"], ds[(1, 1)]["video"]
    assert torch.equal(reversed_[0], played[0].flip(1))  # the reversed window's frames, in its order


def test_clip_transform_resizes_in_uint8_like_the_float_path():
    """The crop is resized in uint8 and normalized after: within one grey level of resizing the
    whole float clip (what torchvision's transforms on float frames give), same shape and crop."""
    import torch.nn.functional as F

    from modalities.video import ClipTransform

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 60, 90, 3), dtype=np.uint8)
    frames[:, 20:40] = 200  # some flat area, some noise
    clip = ClipTransform(32, 0.5, augment=False, mean=[0.0] * 3, std=[1.0] * 3)(frames)
    assert clip.shape == (3, 3, 32, 32)
    square = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[:, :, :, 15:75] / 255  # centred 60 x 60
    expected = F.interpolate(square, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert float((clip.permute(1, 0, 2, 3) - expected).abs().max()) <= 1.01 / 255
    torch.manual_seed(0)
    augmented = ClipTransform(32, 0.25, augment=True)
    a, b = augmented(frames), augmented(frames)
    assert a.shape == b.shape == (3, 3, 32, 32) and not torch.equal(a, b)  # a new crop per call


def test_same_seed_same_clip():
    ds = VideoDataset(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32)
    assert torch.equal(ds[(2, 11)]["video"], ds[(2, 11)]["video"])
    assert not torch.equal(ds[(2, 11)]["video"], ds[(2, 12)]["video"])


def test_order_probes_pair_each_window_with_its_reversed_or_shuffled_copy():
    kwargs = dict(root=CLIPS, num_frames=4, sampling_rate=2, img_size=32, augment=False, clips_per_video=3)
    ds = VideoDataset(probe="reverse", **kwargs)
    assert len(ds) == 4 * 3 * 2
    forward, backward = ds[0], ds[1]
    assert (forward["label"], backward["label"]) == (0, 1)
    assert torch.equal(forward["video"].flip(1), backward["video"])
    assert not torch.equal(ds[0]["video"], ds[2]["video"])  # the next window starts later
    shuffled = VideoDataset(probe="shuffle", **kwargs)
    again = shuffled[3]["video"]
    assert torch.equal(again, shuffled[3]["video"])  # fixed per item: probes are repeatable
    assert not torch.equal(again, shuffled[2]["video"])
    assert sorted(again.sum((0, 2, 3)).tolist()) == pytest.approx(sorted(shuffled[2]["video"].sum((0, 2, 3)).tolist()))
    # test windows start later in each video than train windows: no near-copies across splits
    train, test = (VideoDataset(probe="reverse", split=s, **kwargs) for s in ("train", "test"))
    assert [train.window_position(k) for k in range(3)] == [0.0, 0.25, 0.5]
    assert [test.window_position(k) for k in range(3)] == pytest.approx([0.7, 0.85, 1.0])
    identity = VideoDataset(probe="identity", **kwargs)
    assert len(identity) == 4 * 3 and [item[1] for item in identity.items] == [v for v in range(4) for _ in range(3)]
    with pytest.raises(ValueError, match="probe"):
        VideoDataset(probe="sideways", **kwargs)


def test_corrupt_and_short_videos_are_named(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(RuntimeError, match=r"broken\.mp4"):
        VideoDataset(root=str(tmp_path), num_frames=4, img_size=32)[(0, 0)]
    short = tmp_path / "short"
    short.mkdir()
    shutil.copy(os.path.join(CLIPS, "bikes.mp4"), short / "clip.mp4")
    with pytest.raises(RuntimeError, match=r"clip\.mp4.*shorter than the sampling window"):
        VideoDataset(root=str(short), num_frames=64, sampling_rate=8, img_size=32)[(0, 0)]


def test_list_file_with_labels_and_relative_paths(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "list.csv").write_text("a.mp4 3\n")
    assert list_files(str(tmp_path / "list.csv"), (".mp4",)) == [(str(tmp_path / "a.mp4"), 3)]
    (tmp_path / "bad.csv").write_text("a.mp4 cat\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        list_files(str(tmp_path / "bad.csv"), (".mp4",))


def test_sampler_partitions_match_accumulation():
    """2 processes x 1 micro-batch see the same chunks as 1 process x 2 accumulated ones."""
    single = iter(StepBatchSampler(10, 3, seed=1, accum=2))
    ranks = [iter(StepBatchSampler(10, 3, seed=1, rank=r, world=2)) for r in range(2)]
    for _ in range(4):
        assert [next(single), next(single)] == [next(ranks[0]), next(ranks[1])]
    resumed = iter(StepBatchSampler(10, 3, seed=1, start=12, accum=2))
    fresh = iter(StepBatchSampler(10, 3, seed=1, accum=2))
    for _ in range(4):
        next(fresh)
    assert next(resumed) == next(fresh)
