"""Small, labeled audio sample data: spoken digits plus a few real recorded sounds.

Usage (from the repository root)::

    python tools/make_sample_data.py audio       # -> data/sample/audio
    python -m tools.sample_data.audio data/sample/audio   # the same, directly

Sources and licenses, and why each was chosen:

* ``digits/`` - the words "zero" .. "nine" spoken by Debian's ``espeak-ng`` formant
  synthesizer in 8 English voice variants x 2 speeds x 2 pitches (320 clips, 10 classes).
  A real speech dataset with a redistributable license and no download step does not
  exist among the installable packages; synthesized speech gives true labels, real
  speech-like spectra and a clean *speaker-disjoint* split (2 voices are held out for
  test). espeak-ng is GPL-3+, but the GPL does not cover a program's output, and the
  voices used are formant voices (no recorded diphone databases such as MBROLA's), so
  the clips are generated data free of the program's license.
* ``sounds/`` - a handful of real recorded event sounds (OGG/Vorbis) copied unchanged
  from Debian's ``sound-theme-freedesktop``; only files under CC-BY-3.0 / CC-BY-SA-3.0
  (per that package's ``copyright`` file) are taken, so attribution is all they need.
  They give the decoders a real Vorbis stream at 44.1 and 96 kHz, mono and stereo.
* ``formats/`` - one digit clip written again as 44.1 kHz stereo WAV and MP3, so each
  container the audio decoders accept has one real file.

Build needs: ``espeak-ng`` and ``sound-theme-freedesktop`` (apt), and the Python
packages ``numpy``, ``soundfile`` (libsndfile >= 1.1 for MP3) and ``torchaudio``
(resampling). Reading the output needs only ``soundfile`` (or any FLAC/OGG/MP3 decoder).
Every step is deterministic (fixed voice/speed/pitch grid, sorted inputs, no random
numbers), so a rebuild on the same package versions gives byte-identical files.
"""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .sources import installed_deb_version

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Voice = espeak-ng language voice, optionally "+variant" (f* female, m* male timbre).
TRAIN_VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en+f3", "en-us+m3")
TEST_VOICES = ("en-029", "en-us+f2")  # held out: the test split has unseen speakers
SPEEDS_WPM = (150, 200)  # espeak-ng -s, words per minute (default 175)
PITCHES = (35, 65)  # espeak-ng -p, 0..99 (default 50)

SAMPLE_RATE = 16_000  # Hz, of the digit clips
FORMATS_RATE = 44_100  # Hz, of the WAV/MP3 copies in formats/
SILENCE_DB = -40.0  # a 10 ms frame this far below the loudest frame's RMS counts as silence
FRAME_S = 0.01  # seconds per frame for the silence test
EDGE_PAD_S = 0.03  # seconds of silence kept before the first / after the last sound

SOUNDS_DIR = Path("/usr/share/sounds/freedesktop/stereo")
# CC-BY / CC-BY-SA files only (GPL-licensed ones are left out), with varied rates/channels.
SOUND_LICENSES = {
    "bell.oga": "CC-BY-3.0, Dr. Richard Boulanger et al",
    "camera-shutter.oga": "CC-BY-SA-3.0, freesound user horsthorstensen",
    "complete.oga": "CC-BY-3.0, Dr. Richard Boulanger et al",
    "dialog-information.oga": "CC-BY-SA-3.0, Ivica Bukvic",
    "message.oga": "CC-BY-SA-3.0, Ivica Bukvic",
    "suspend-error.oga": "CC-BY-SA-3.0, Red Hat, Inc.",
}
FORMATS_SOURCE = ("test", "seven", "en-029", 150, 65)  # split, word, voice, speed, pitch


def require_tool(executable: str, apt_package: str) -> None:
    """Fail early with the install command, rather than deep inside a subprocess call."""
    if shutil.which(executable) is None:
        raise SystemExit(f"{executable} not found: apt-get install -y {apt_package}")


def voice_slug(voice: str) -> str:
    """File-name-safe voice name: '+' (espeak's variant marker) becomes '-'."""
    return voice.replace("+", "-")


def synthesize(word: str, voice: str, speed_wpm: int, pitch: int, tmp: Path) -> tuple[np.ndarray, int]:
    """Speak one word with espeak-ng; return (wave float32 [T] in [-1, 1], sample rate).

    espeak-ng writes a complete WAV with -w; going through a file (not --stdout)
    gives a header with the true length.
    """
    wav = tmp / "word.wav"
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(wav), word]
    subprocess.run(cmd, check=True, capture_output=True)
    wave, rate = sf.read(wav, dtype="float32")  # [T] mono, 22050 Hz for espeak-ng
    return wave, rate


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc filter, deterministic on CPU)."""
    import torch
    import torchaudio.functional as AF

    if rate_in == rate_out:
        return wave
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), rate_in, rate_out)
    return out.numpy()


def trim_silence(wave: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading/trailing silence (espeak pads each utterance) to keep files small.

    The test is on frame energy relative to the loudest frame, not on a fixed amplitude,
    so quiet word endings (a final /s/ or /n/ of a breathy female variant) are kept.
    """
    frame = int(FRAME_S * rate)
    n_frames = len(wave) // frame
    if n_frames == 0:
        return wave
    rms = np.sqrt((wave[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1))  # [n_frames]
    loud = np.flatnonzero(rms > rms.max() * 10 ** (SILENCE_DB / 20))
    if loud.size == 0:  # all-zero clip: nothing to trim against
        return wave
    pad = int(EDGE_PAD_S * rate)
    start = max(loud[0] * frame - pad, 0)
    stop = min((loud[-1] + 1) * frame + pad, len(wave))
    return wave[start:stop]


def digit_clip(word: str, voice: str, speed_wpm: int, pitch: int, tmp: Path) -> np.ndarray:
    """One labeled clip: float32 [T] mono at SAMPLE_RATE, silence trimmed, clipped to [-1, 1]."""
    wave, rate = synthesize(word, voice, speed_wpm, pitch, tmp)
    wave = trim_silence(resample(wave, rate, SAMPLE_RATE), SAMPLE_RATE)
    return np.clip(wave, -1.0, 1.0)


def digit_grid() -> list[tuple[str, str, str, int, int]]:
    """All (split, word, voice, speed, pitch) combinations, in a fixed order."""
    grid = []
    for split, voices in (("train", TRAIN_VOICES), ("test", TEST_VOICES)):
        for word in WORDS:
            for voice in sorted(voices):
                for speed in SPEEDS_WPM:
                    for pitch in PITCHES:
                        grid.append((split, word, voice, speed, pitch))
    return grid


def digit_path(split: str, word: str, voice: str, speed: int, pitch: int) -> Path:
    """digits/<split>/<word>/<voice>_<speed>_<pitch>.flac, relative to the output folder."""
    return Path("digits", split, word, f"{voice_slug(voice)}_{speed}_{pitch}.flac")


def write_digits(out: Path, tmp: Path) -> list[dict]:
    """Synthesize every clip as 16-bit FLAC; return one manifest row per clip."""
    rows = []
    for split, word, voice, speed, pitch in digit_grid():
        wave = digit_clip(word, voice, speed, pitch, tmp)
        rel = digit_path(split, word, voice, speed, pitch)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
        rows.append({
            "path": rel.as_posix(), "split": split, "label": WORDS.index(word), "word": word,
            "voice": voice, "speed_wpm": speed, "pitch": pitch, "num_samples": len(wave),
        })
    return rows


def write_manifest(out: Path, rows: list[dict]) -> None:
    """digits/manifest.csv: path (relative to the output folder), split, label, ... ."""
    with open(out / "digits" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def copy_sounds(out: Path) -> list[str]:
    """Copy the chosen freedesktop sounds byte for byte, keeping their names."""
    (out / "sounds").mkdir(parents=True, exist_ok=True)
    for name in sorted(SOUND_LICENSES):
        shutil.copyfile(SOUNDS_DIR / name, out / "sounds" / name)
    return sorted(SOUND_LICENSES)


def write_formats(out: Path) -> list[str]:
    """One digit clip as 44.1 kHz stereo WAV (PCM_16) and MP3 (MPEG layer III).

    The two channels differ (right = left at 0.8 gain) so a decoder that drops or
    swaps a channel is detectable.
    """
    split, word, voice, speed, pitch = FORMATS_SOURCE
    mono, _ = sf.read(out / digit_path(split, word, voice, speed, pitch), dtype="float32")
    mono = resample(mono, SAMPLE_RATE, FORMATS_RATE)
    stereo = np.clip(np.stack([mono, 0.8 * mono], axis=1), -1.0, 1.0)  # [T, 2]
    (out / "formats").mkdir(parents=True, exist_ok=True)
    stem = f"{word}_{voice_slug(voice)}_{speed}_{pitch}_44k_stereo"
    sf.write(out / "formats" / f"{stem}.wav", stereo, FORMATS_RATE, format="WAV", subtype="PCM_16")
    sf.write(out / "formats" / f"{stem}.mp3", stereo, FORMATS_RATE, format="MP3", subtype="MPEG_LAYER_III")
    return [f"{stem}.wav", f"{stem}.mp3"]


def verify_decoding(out: Path) -> dict[str, int]:
    """Decode every written audio file with soundfile; count files per container format.

    Raises if a file does not decode or is empty, so a broken build never passes.
    """
    counts: dict[str, int] = {}
    for path in sorted(out.rglob("*")):
        if path.suffix not in {".flac", ".oga", ".wav", ".mp3"}:
            continue
        wave, _ = sf.read(path, dtype="float32")
        if wave.size == 0 or not np.isfinite(wave).all():
            raise RuntimeError(f"{path} decoded to no / non-finite samples")
        fmt = sf.info(path).format
        counts[fmt] = counts.get(fmt, 0) + 1
    return counts


def tool_version(cmd: list[str]) -> str:
    """First line of a version command, for the README."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[0].strip()


def folder_bytes(path: Path) -> int:
    """Total size of the files under path, in bytes."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def readme_text(summary: dict, rows: list[dict]) -> str:
    """data/sample/audio/README.md, generated so counts and versions never go stale."""
    per_split = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    seconds = sum(r["num_samples"] for r in rows) / SAMPLE_RATE
    sound_lines = "\n".join(f"  * `{name}`: {lic}" for name, lic in sorted(SOUND_LICENSES.items()))
    decoded = ", ".join(f"{fmt}: {n}" for fmt, n in sorted(summary["decoded_by_soundfile"].items()))
    return f"""# Audio sample data

Built by `python -m tools.sample_data.audio data/sample/audio` (see that module's
docstring). Deterministic: a rebuild with the same package versions gives identical files.

## digits/ - spoken digits, 10 classes, speaker-disjoint split

* `digits/<split>/<word>/<voice>_<speed>_<pitch>.flac`: 16 kHz mono 16-bit FLAC, one word
  each, leading/trailing silence trimmed (frames {-SILENCE_DB:.0f} dB below the loudest
  10 ms frame; {EDGE_PAD_S * 1000:.0f} ms kept either side).
  Class folders are `zero` .. `nine`; the label in `manifest.csv` is the digit value
  (0..9). Folder-sorting loaders (torchvision's `DatasetFolder`) number classes
  alphabetically (eight=0, five=1, ...), which is not the digit value.
* `digits/manifest.csv`: `path,split,label,word,voice,speed_wpm,pitch,num_samples`.
* {len(rows)} clips ({per_split['train']} train, {per_split['test']} test), {seconds:.1f} s in total.
* Voices (espeak-ng `-v`; `+f*`/`+m*` are variants; in file names `+` is written `-`):
  train `{', '.join(TRAIN_VOICES)}`; test (held out) `{', '.join(TEST_VOICES)}`.
  Speeds `-s {' / '.join(map(str, SPEEDS_WPM))}` words per minute, pitches `-p {' / '.join(map(str, PITCHES))}`.
* Command per clip: `espeak-ng -v <voice> -s <speed> -p <pitch> -w word.wav <word>` (22.05 kHz),
  then resampled to 16 kHz with `torchaudio.functional.resample` and written with `soundfile`.
* Tool: `{summary['espeak_version']}`, Debian package `espeak-ng {summary['espeak_deb']}`.
* License: espeak-ng is GPL-3+; the GPL does not extend to a program's output and the
  formant voices used contain no recorded speech, so these generated clips are not under
  the GPL; they can be shipped under the project's own license.

## sounds/ - real recorded sounds (OGG/Vorbis)

Copied byte for byte from Debian's `sound-theme-freedesktop {summary['sounds_deb']}`
(`/usr/share/sounds/freedesktop/stereo/`), names kept. Licenses from
`/usr/share/doc/sound-theme-freedesktop/copyright` (only CC-licensed files were taken):

{sound_lines}

CC-BY(-SA) 3.0 requires attribution (above) and, for -SA, sharing changes under the same license.

## formats/ - one WAV and one MP3

`{summary['formats'][0]}` and `{summary['formats'][1]}`: the test clip
`{digit_path(*FORMATS_SOURCE).as_posix()}` resampled to 44.1 kHz, stereo (right = 0.8 x left),
PCM_16 WAV and MPEG layer III MP3 written by `soundfile` (libsndfile {sf.__libsndfile_version__}).
Same license as the digits.

## Decoding check

Every file was read back with `soundfile` {sf.__version__} (libsndfile {sf.__libsndfile_version__}): {decoded}.
Total size: {summary['bytes'] / 1e6:.2f} MB.
"""


def build(out_dir: str) -> dict:
    """Write digits/, sounds/ and formats/ under out_dir; return a short summary."""
    require_tool("espeak-ng", "espeak-ng")
    if not SOUNDS_DIR.is_dir():
        raise SystemExit(f"{SOUNDS_DIR} missing: apt-get install -y sound-theme-freedesktop")
    out = Path(out_dir)
    for stale in ("digits", "sounds", "formats"):  # a rebuild must not keep old clips
        shutil.rmtree(out / stale, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = write_digits(out, Path(tmp))
    write_manifest(out, rows)
    summary = {
        "clips": len(rows),
        "train": sum(r["split"] == "train" for r in rows),
        "test": sum(r["split"] == "test" for r in rows),
        "classes": len(WORDS),
        "sounds": copy_sounds(out),
        "formats": write_formats(out),
        "decoded_by_soundfile": verify_decoding(out),
        "espeak_version": tool_version(["espeak-ng", "--version"]).split("  Data at")[0],
        "espeak_deb": installed_deb_version("espeak-ng"),
        "sounds_deb": installed_deb_version("sound-theme-freedesktop"),
        "license": "digits/formats: generated (espeak-ng GPL-3+ does not cover output); sounds: CC-BY-3.0 / CC-BY-SA-3.0",
    }
    summary["bytes"] = folder_bytes(out)
    (out / "README.md").write_text(readme_text(summary, rows))
    summary["bytes"] = folder_bytes(out)
    return summary


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "data/sample/audio"))
