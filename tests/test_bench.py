"""tools/bench.py: both sides of a comparison do the same work, and every benchmark runs to its
ratio line from the command line."""
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def run_bench(*args, timeout=300):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_vitmae_hides_the_tokens_unimask_hides():
    """The `noise` the benchmark gives ViTMAE makes it keep exactly unimask's visible tokens."""
    pytest.importorskip("transformers")
    from benchmarks.pairs import IMAGE, hf_image, hf_noise, unimask_image

    config = dict(IMAGE["cpu"], enc_depth=1, dec_depth=1, batch=4)
    ours, hf = unimask_image(config), hf_image(config)
    images = torch.randn(4, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    tokens = ours.adapter.tokenize({"image": images})
    hidden = ours.masker(tokens, config["mask_ratio"], gen).masked
    assert int((~hidden).sum(1).min()) == int((~hidden).sum(1).max()) == 12  # int(49 * 0.25), as ViTMAE keeps
    out = hf(pixel_values=images, noise=hf_noise(hidden, gen))
    assert torch.equal(out.mask.bool(), hidden)


def test_imagemae_bench_prints_its_ratios():
    pytest.importorskip("transformers")
    lines = run_bench("imagemae", "--vs", "hf", "--config", "cpu", "--batch", "8", "--steps", "1", "--warmup", "0",
                      "--checkpointing", "--precision", "fp32")
    assert re.fullmatch(r"ratio_vs_hf=\d+\.\d\d", lines[-1]), lines[-3:]
    assert any(line.startswith("activation checkpointing: step time") for line in lines)


def test_data_bench_runs_both_loaders_with_a_worker():
    lines = run_bench("data", "--vs", "reference", "--sample", "--workers", "1", "--clips", "4", "--num-frames", "4",
                      "--img-size", "32")
    assert re.fullmatch(r"ratio_vs_reference=\d+\.\d\d", lines[-1]), lines[-3:]
    assert any(line.startswith("1 workers: unimask") for line in lines)


def test_shard_bench_reads_both_sources_with_a_worker():
    lines = run_bench("data", "--source", "shards", "--sample", "--workers", "1", "--clips", "4", "--num-frames", "4",
                      "--img-size", "32", "--rounds", "1")
    assert re.fullmatch(r"ratio_shards_vs_folder=\d+\.\d\d", lines[-1]), lines[-3:]
    assert any(re.match(r"1 workers: folder +\d+\.\d\d clips/s, shards +\d+\.\d\d clips/s", line) for line in lines)
    assert int(re.search(r"packed into (\d+) shard", lines[0]).group(1)) >= 2  # reads cross shards
