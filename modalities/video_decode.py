"""Decoding video frames at chosen indices: decord where it imports (x86_64 wheels), PyAV elsewhere.

Both backends touch only the sampled frames. decord builds a frame index when it opens a file
and seeks to the key frame before each window. The PyAV fallback does the same from a packet
index (`AVIndex`): demuxing every packet of the stream, without decoding any, gives each
frame's presentation timestamp and which frames are key frames, so frame i is found by seeking
to the last key frame at or before it and decoding forward from there. Files the index cannot
describe (no timestamps, or a decoded frame whose timestamp no packet had, e.g. AVI's packed
B-frames) are decoded from the start instead, as before.

Before either backend touches a file, its container header is read (PyAV opens a file without
decoding it) and the declared frame size and frame count are checked against the dataset's
max_pixels / max_frames (modalities/limits.py): a small file declaring 60k x 60k frames or a
billion of them is refused naming the binding, before a frame is decoded. The header speaks for
the first frame only (an MJPEG stream can declare 64 x 64 and carry 8000 x 8000 frames later): the
PyAV backend checks every decoded frame's size against the same max_pixels before converting it.
"""
from __future__ import annotations

import bisect
import os
from typing import Optional

import numpy as np

from modalities.limits import MAX_FRAME_PIXELS, MAX_FRAMES, Limit
from unimask.shards import readable

try:
    import decord
    decord.bridge.set_bridge("native")
except ImportError:  # no wheel on this platform: PyAV below
    decord = None


def set_decoder_logging(verbose: bool):
    """FFmpeg (inside decord and PyAV) prints a line per damaged slice of a broken stream
    (`[h264 @ ...] decode_slice_header error`), thousands per bad file; unimask reports such a
    file in its own error instead. verbose=True (VideoDataset.verbose_decode, or the environment
    variable UNIMASK_VERBOSE_DECODE=1) lets FFmpeg speak again, for debugging a decoder."""
    import av.logging

    av.logging.set_level(av.logging.VERBOSE if verbose else None)  # None: libav logging off
    if decord is not None:
        decord.logging.set_level(decord.logging.INFO if verbose else decord.logging.QUIET)


set_decoder_logging(os.environ.get("UNIMASK_VERBOSE_DECODE", "") not in ("", "0"))


class Unindexed(Exception):
    """A decoded frame the packet index does not know: decode this file from the start."""


class AVIndex:
    """The frames of a file's first video stream in presentation order, from its packets alone.

    pts [count] int: frame i's timestamp (stream time base); keys: indices of the key frames,
    ascending. `pts is None` when some packet has no timestamp: then frames are found by
    decoding from the start, and the count by decoding too (container.frames when it has one)."""

    def __init__(self, path: str, max_pixels: Limit = Limit(MAX_FRAME_PIXELS, "VideoDataset.max_pixels")):
        import av

        self.max_pixels = max_pixels

        with av.open(readable(path)) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate) if stream.average_rate else 0.0
            stamps, key_stamps = [], set()
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                if packet.pts is None:
                    stamps = None
                    break
                stamps.append(packet.pts)
                if packet.is_keyframe:
                    key_stamps.add(packet.pts)
        if stamps:
            self.pts = np.sort(np.asarray(stamps, dtype=np.int64))
            self.row = {int(p): i for i, p in enumerate(self.pts)}
            self.keys = [self.row[p] for p in sorted(key_stamps)]
            self.count = len(self.pts)
        else:
            self.pts, self.row, self.keys, self.count = None, {}, [], count_frames(path)
        if not self.count:
            raise ValueError("no decodable video frames")
        self.decoded = 0  # frames the last read decoded (what seeking saves)

    def key_at_or_before(self, i: int) -> int:
        """Index of the last key frame at or before frame i (0 when none is marked)."""
        at = bisect.bisect_right(self.keys, i) - 1
        return self.keys[at] if at >= 0 else 0

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) -> [T, H, W, 3] uint8, converting
        only those to RGB (the costly step); no decoded video is held."""
        wanted = sorted(set(int(i) for i in indices))
        if wanted[-1] >= self.count:
            raise ValueError(f"only {self.count} decodable frames, the clip needs frame {wanted[-1]}")
        frames = None
        if self.pts is not None:
            try:
                frames = self.read_seeking(path, wanted)
            except Unindexed:
                frames = None
        if frames is None:
            frames = self.read_from_start(path, wanted)
        return np.stack([frames[int(i)] for i in indices])

    def read_seeking(self, path: str, wanted: list) -> dict:
        """{index: [H, W, 3]}: for each wanted frame, seek to its key frame unless decoding on
        from the current position reaches it sooner, then decode forward to it."""
        import av

        frames, need, self.decoded = {}, set(wanted), 0
        with av.open(readable(path)) as container:
            stream = container.streams.video[0]
            decoder, position = None, -1  # position: index of the last decoded frame
            for target in wanted:
                if target in frames:
                    continue
                key = self.key_at_or_before(target)
                if decoder is None or key > position + 1 or target <= position:
                    container.seek(int(self.pts[key]), stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                for frame in decoder:
                    self.decoded += 1
                    if frame.pts not in self.row:
                        raise Unindexed(frame.pts)
                    position = self.row[frame.pts]
                    self.check_frame(path, frame, position)
                    if position in need and position not in frames:
                        frames[position] = frame.to_ndarray(format="rgb24")
                    if position >= target:
                        break
                if target not in frames:  # not where the index put it: the slow path decides
                    raise Unindexed(target)
        return frames

    def check_frame(self, path: str, frame, index: int):
        """A decoded frame's own size against max_pixels, before it is converted to RGB (frames of
        a stream need not share the size its header declares)."""
        width, height = frame.width, frame.height
        self.max_pixels.check(path, f"decoded video frame {index} ({width} x {height})",
                              width * height, "pixels a frame", width * height * 3)

    def read_from_start(self, path: str, wanted: list) -> dict:
        """{index: [H, W, 3]}: decode from the first frame up to the last wanted one."""
        import av

        need, frames, self.decoded = set(wanted), {}, 0
        with av.open(readable(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                self.check_frame(path, frame, self.decoded)
                if self.decoded in need:
                    frames[self.decoded] = frame.to_ndarray(format="rgb24")
                self.decoded += 1
                if self.decoded > wanted[-1]:
                    break
        if len(frames) < len(need):
            raise ValueError(f"only {self.decoded} decodable frames, the clip needs frame {wanted[-1]}")
        return frames


def declared_frames(container, stream) -> int:
    """The frame count a container declares: its own count, else duration x frame rate; 0 unknown."""
    import av

    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = container.duration / av.time_base if container.duration else 0.0
    return int(seconds * float(rate)) if rate and seconds > 0 else 0


def check_video_header(path: str, max_frames: Limit, max_pixels: Limit):
    """The first video stream's declared frame size and frame count against the limits. A file
    PyAV cannot open is left to the decoder, whose error says what is wrong with it."""
    import av

    try:
        container = av.open(readable(path))
    except Exception:  # not a container FFmpeg knows: the decoder reports it
        return
    with container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        max_pixels.check(path, f"the video stream's frame size ({width} x {height})", width * height,
                         "pixels a frame", width * height * 3)
        max_frames.check(path, "the video stream", declared_frames(container, stream), "frames")


def count_frames(path: str) -> int:
    """The container's frame count when it has one, else the frames counted by decoding them
    (none is converted to RGB)."""
    import av

    with av.open(readable(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.decode(stream))


class VideoReader:
    """Frame count, frame rate and random access; decord when available, PyAV otherwise.
    max_frames / max_pixels: the size guard, checked on the container header before decoding
    (and the frame count again once the backend has counted)."""

    def __init__(self, path: str, backend: str = "auto", max_frames: Limit = Limit(MAX_FRAMES, "VideoDataset.max_frames"),
                 max_pixels: Limit = Limit(MAX_FRAME_PIXELS, "VideoDataset.max_pixels")):
        check_video_header(path, max_frames, max_pixels)
        self.path = path
        self.backend = "decord" if backend == "auto" and decord is not None else ("av" if backend == "auto" else backend)
        self.index: Optional[AVIndex] = None
        if self.backend == "decord":
            self.reader = decord.VideoReader(readable(path), num_threads=1)
            self.count, self.fps = len(self.reader), float(self.reader.get_avg_fps())
        else:
            self.index = AVIndex(path, max_pixels)
            self.count, self.fps = self.index.count, self.index.fps
        max_frames.check(path, "the video stream", self.count, "frames (counted)")

    def __len__(self):
        return self.count

    def get(self, indices: np.ndarray) -> np.ndarray:  # -> [T, H, W, 3] uint8
        if self.backend == "decord":
            return self.reader.get_batch(list(indices)).asnumpy()
        return self.index.read(self.path, indices)
