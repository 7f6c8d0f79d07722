"""Audio (AudioMAE): decoding every format, fbank features, bad files, local attention, training."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import ROOT, SMOKE, fast_params, read_metrics, run_train
from modalities.audio import AudioAdapter, AudioDataset, load_waveform, read_audio
from modalities.audio.features import fbank
from unimask.decoders import MAEDecoder
from unimask.tokens import Tokens

AUDIO = os.path.join(ROOT, "data", "sample", "audio")
DIGIT = os.path.join(AUDIO, "digits", "train", "seven", "en_150_35.flac")


def tone(seconds=1.0, rate=16000, channels=1, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave * (1 + 0.1 * c) for c in range(channels)], 1).astype(np.float32)  # [S, C]


def test_fbank_is_audiomae_kaldi_fbank_and_10s_gives_512_tokens_on_64_by_8(tmp_path):
    from torchaudio.compliance import kaldi

    path = str(tmp_path / "ten.wav")
    sf.write(path, tone(10.0), 16000)
    wave = load_waveform(path, 16000, 0.025)
    ours = fbank(wave, 16000)
    theirs = kaldi.fbank((wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                         window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    assert ours.shape == (998, 128) and torch.equal(ours, theirs)
    ds = AudioDataset(root=path, augment=False)
    sample = ds[(0, 0)]["fbank"]
    assert sample.shape == (1, 1024, 128)
    torch.testing.assert_close(sample[0, :998], (theirs + 4.2677393) / (2 * 4.5689974))  # AudioMAE's normalization
    tokens = AudioAdapter().tokenize({"fbank": sample[None]})
    assert tokens.patches.shape == (1, 512, 256) and tokens.grid == (64, 8)
    assert tokens.coords[0, 9].tolist() == [1.0, 1.0]  # time-major: token 9 = time row 1, frequency column 1


@pytest.mark.parametrize("name", ["digits/train/seven/en_150_35.flac", "sounds/bell.oga", "sounds/complete.oga",
                                  "formats/seven_en-029_150_65_44k_stereo.wav",
                                  "formats/seven_en-029_150_65_44k_stereo.mp3"])
def test_every_sample_format_decodes_mono_at_16k(name):
    path = os.path.join(AUDIO, name)
    samples, rate = read_audio(path)
    wave = load_waveform(path, 16000, 0.025)
    assert wave.dim() == 1 and bool(torch.isfinite(wave).all())
    assert abs(len(wave) / 16000 - samples.shape[1] / rate) < 1e-3  # the duration survives resampling


def test_pyav_takes_what_soundfile_cannot_open(tmp_path):
    import av

    path = str(tmp_path / "clip.m4a")  # AAC: libsndfile has no decoder for it
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=22050)
        samples = (tone(1.0, 22050)[:, 0] * 32767).astype(np.int16)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="s16", layout="mono")
            frame.sample_rate = 22050
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(Exception):
        sf.info(path)
    wave = load_waveform(path, 16000, 0.025)
    assert abs(len(wave) / 16000 - 1.0) < 0.1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_and_channel_count_is_resampled_keeping_the_duration(tmp_path, rate):
    path = str(tmp_path / f"stereo_{rate}.wav")
    sf.write(path, tone(1.5, rate, channels=2), rate)
    wave = load_waveform(path, 16000, 0.025)
    assert len(wave) == 24000  # 1.5 s at 16 kHz
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(int(spectrum.argmax()) / 1.5 - 440) < 2  # the tone is still at 440 Hz


def test_short_clips_are_padded_and_long_ones_windowed(tmp_path):
    sf.write(str(tmp_path / "short.wav"), tone(0.3), 16000)
    sf.write(str(tmp_path / "long.wav"), tone(3.0), 16000)
    ds = AudioDataset(root=str(tmp_path), clip_seconds=1.0, target_length=100, augment=False)
    long, short = ds[(0, 0)]["fbank"], ds[(1, 0)]["fbank"]
    assert long.shape == short.shape == (1, 100, 128)
    padding = (0 - ds.mean) / (2 * ds.std)
    assert torch.allclose(short[0, 40:], torch.full_like(short[0, 40:], padding))  # 0.3 s = 28 frames, then padding
    assert not torch.allclose(short[0, :20], torch.full_like(short[0, :20], padding))
    placed = AudioDataset(root=str(tmp_path / "short.wav"), clip_seconds=1.0, target_length=100)
    starts = {int((placed[(0, seed)]["fbank"][0, :, 0] != padding).nonzero()[0]) for seed in range(6)}
    assert len(starts) > 1  # augment: the short clip lands at random offsets in the window


@pytest.mark.parametrize("name, write, message", [
    ("empty.wav", lambda p: sf.write(p, np.zeros((0, 1), np.float32), 16000), "zero-length"),
    ("silent.wav", lambda p: sf.write(p, np.zeros((16000, 1), np.float32), 16000), "silent"),
    ("nan.wav", lambda p: sf.write(p, np.full((16000, 1), np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
    ("tiny.wav", lambda p: sf.write(p, tone(0.01), 16000), "shorter than one analysis window"),
    ("junk.flac", lambda p: open(p, "wb").write(b"fLaC but nothing else"), "cannot be decoded"),
    ("cut.flac", lambda p: open(p, "wb").write(open(DIGIT, "rb").read()[:4000]), "cannot be decoded|truncated"),
])
def test_bad_files_are_named_never_zeros_or_nan(tmp_path, name, write, message):
    path = str(tmp_path / name)
    write(path)
    with pytest.raises(RuntimeError, match=rf"{name}.*({message})"):
        AudioDataset(root=path)[(0, 0)]


def test_bad_files_are_skipped_and_counted(tmp_path):
    sf.write(str(tmp_path / "a_bad.wav"), np.zeros((16000, 1), np.float32), 16000)
    sf.write(str(tmp_path / "b_good.wav"), tone(0.5), 16000)
    ds = AudioDataset(root=str(tmp_path), clip_seconds=0.5, target_length=48, skip_bad_samples=True)
    with pytest.warns(UserWarning, match=r"a_bad\.wav.*silent"):
        sample = ds[(0, 0)]
    assert sample["n_bad"] == 1 and bool(torch.isfinite(sample["fbank"]).all())


def test_class_folders_splits_and_named_list_labels(tmp_path):
    ds = AudioDataset(root=os.path.join(AUDIO, "digits"), clip_seconds=0.96, target_length=96)
    test = AudioDataset(root=os.path.join(AUDIO, "digits"), clip_seconds=0.96, target_length=96, split="test")
    assert len(ds) == 240 and len(test) == 80 and sorted({label for _, label in test.items}) == list(range(10))
    sf.write(str(tmp_path / "x.wav"), tone(0.5), 16000)
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    (tmp_path / "list.tsv").write_text("x.wav\tcat\nx.wav\tdog\n")
    assert [label for _, label in AudioDataset(root=str(tmp_path / "list.tsv")).items] == [1, 0]


def test_local_window_attention_sees_only_its_window():
    decoder = MAEDecoder(in_dim=16, dim=16, depth=1, num_heads=2, window=(2, 2), shift_windows=False).eval()
    decoder.init_head(4)
    grid = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(1, 16, 2).float()
    tokens = Tokens(torch.zeros(1, 16, 4), grid, grid=(4, 4))
    ids = torch.arange(16)[None]
    x = torch.randn(1, 16, 16)
    out = decoder(x, None, tokens, ids)
    far = x.clone()
    far[0, 15] += torch.randn(16)  # token (3, 3): another window than token (0, 0)
    moved = decoder(far, None, tokens, ids)
    assert torch.allclose(out[0, 0], moved[0, 0]) and not torch.allclose(out[0, 15], moved[0, 15])
    near = x.clone()
    near[0, 5] += torch.randn(16)  # token (1, 1): the same window as (0, 0)
    assert not torch.allclose(decoder(near, None, tokens, ids)[0, 0], out[0, 0])


@pytest.mark.parametrize("decoder", ["global", "local"])
def test_recipe_trains_under_smoke_with_falling_loss_and_renders(tmp_path, decoder):
    extra = ["MAEDecoder.window=(2, 2)", "DEC_DEPTH=2"] if decoder == "local" else []
    workdir = str(tmp_path / decoder)
    assert run_train(["--gin", "gin/audio_mae.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.num_workers=1", *extra)]) == 0
    rows = read_metrics(workdir)
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert evals[-1] < evals[0], evals
    assert os.path.isfile(os.path.join(workdir, "recon", "step_30.png"))
    wave, rate = sf.read(os.path.join(workdir, "recon", "step_30.wav"))
    assert rate == 16000 and len(wave) > 0 and np.isfinite(wave).all()


def test_eval_probes_spoken_digits_above_chance(tmp_path):
    import eval as evaluator

    workdir = str(tmp_path / "cpu")
    assert run_train(["--gin", "gin/audio_mae_cpu.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=4", "AUDIO_FRAMES=96", "CLIP_SECONDS=0.96", "MEL_BINS=128",
                                   "PATCH=16")]) == 0
    result = evaluator.evaluate(["--checkpoint", os.path.join(workdir, "checkpoints", "last.pt"),
                                 "--protocol", "knn", "--k", "5", "--json", str(tmp_path / "r.json")])
    assert result["n_train"] == 240 and result["n_test"] == 80 and result["top1_acc"] > 10.0 + 5.0
    assert json.load(open(tmp_path / "r.json"))["top1_acc"] == result["top1_acc"]
