"""tools/export.py --format onnx: the bare encoder of a ViT recipe (input [B, C, *S] -> every
token's features [B, N, D], the batch axis dynamic) runs in onnxruntime with PyTorch's numbers.
Needs the [onnx] extra (onnx, onnxscript, onnxruntime); skipped without it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, SMOKE, fast_params, run_train

for package in ("onnx", "onnxscript"):
    pytest.importorskip(package, reason=f"{package} is not installed: pip install 'unimask[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'unimask[onnx]'")


@pytest.mark.slow  # ~13 s each on 2 cores, most of it the export subprocess importing torch and onnx
@pytest.mark.parametrize("recipe, key, size", [("image_mae_cpu", "image", (1, 32, 32)),
                                               ("video_mae_cpu", "video", (3, 4, 32, 32)),
                                               ("audio_mae_cpu", "fbank", (1, 64, 32))])  # any length: traced at one
def test_onnx_encoder_matches_pytorch(tmp_path, recipe, key, size):
    from unimask.weights.build import model_from_checkpoint

    run = str(tmp_path / "run")
    assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", run,
                      *fast_params("train.steps=1")]) == 0
    checkpoint, out = os.path.join(run, "checkpoints", "last.pt"), str(tmp_path / "encoder.onnx")
    shape = ["--input-shape", ",".join(map(str, size))] if key == "fbank" else []
    done = subprocess.run([sys.executable, "tools/export.py", "--checkpoint", checkpoint, "--format", "onnx",
                           "--out", out, *shape], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime vs PyTorch" in done.stdout
    model, _ = model_from_checkpoint(checkpoint)
    model.eval()
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):  # neither is the traced example's 2: the batch axis is dynamic
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected, _ = model.features({key: x})  # [B, N, D], every token visible
        (theirs,) = session.run(None, {"input": x.numpy()})
        assert theirs.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(theirs), expected, rtol=0, atol=1e-4)
