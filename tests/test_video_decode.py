"""The PyAV fallback seeks: frames found through the packet index equal the frames decoded from
the start, far fewer frames are decoded for a late window, and files without timestamps still
read (from the start)."""
import numpy as np
import pytest

from modalities.video_decode import AVIndex, VideoReader, decord


def write_clip(path, frames=150, gop=10, codec="libx264", fmt=None):
    """A moving-gradient clip (each frame differs), key frames every `gop`, B-frames on -> path."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"bf": "2", "sc_threshold": "0", "preset": "veryfast"}
        y, x = np.mgrid[0:48, 0:64]
        for t in range(frames):
            rgb = np.stack([(x * 4 + t * 3) % 256, (y * 5 + t * 7) % 256, np.full_like(x, t % 256)], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def test_seeking_reads_the_frames_decoding_from_the_start_gives(tmp_path):
    path = write_clip(tmp_path / "long.mp4")
    index = AVIndex(path)
    assert index.count == 150 and index.keys[:3] == [0, 10, 20]
    wanted = np.array([140, 3, 141, 75, 75, 149, 12])  # any order, repeats, across key frames
    sought = index.read(path, wanted)
    assert index.decoded < 40  # three seeks, each decoding less than a GOP and a few B-frames
    reference = np.stack([index.read_from_start(path, sorted(set(wanted.tolist())))[i] for i in wanted])
    assert index.decoded == 150
    assert np.array_equal(sought, reference)
    if decord is not None:  # the decord backend agrees frame for frame
        assert np.array_equal(VideoReader(path, "decord").get(wanted), sought)


def test_a_late_window_decodes_about_one_gop(tmp_path):
    path = write_clip(tmp_path / "long.mp4", frames=300, gop=25)
    reader = VideoReader(path, "av")
    clip = reader.get(np.arange(260, 276, 2))  # 8 frames, stride 2, near the end
    assert clip.shape == (8, 48, 64, 3) and reader.index.decoded <= 25 + 16 + 4


def test_containers_without_a_frame_count_are_indexed_without_decoding(tmp_path):
    path = write_clip(tmp_path / "clip.mkv", frames=60, gop=12, fmt="matroska")
    reader = VideoReader(path, "av")
    assert len(reader) == 60 and reader.index.decoded == 0
    assert np.array_equal(reader.get(np.array([50, 5])), np.stack([
        reader.index.read_from_start(path, [5, 50])[i] for i in (50, 5)]))


def test_a_stream_without_timestamps_is_read_from_the_start(tmp_path):
    path = write_clip(tmp_path / "raw.h264", frames=40, gop=8, fmt="h264")
    reader = VideoReader(path, "av")
    assert len(reader) == 40
    frames = reader.get(np.array([30, 2]))
    assert frames.shape == (2, 48, 64, 3)
    assert reader.index.pts is None and reader.index.decoded == 31  # no index: decoded up to the last wanted frame


def test_a_frame_past_the_end_is_named(tmp_path):
    path = write_clip(tmp_path / "short.mp4", frames=20, gop=5)
    with pytest.raises(ValueError, match="only 20 decodable frames, the clip needs frame 25"):
        VideoReader(path, "av").get(np.array([1, 25]))
