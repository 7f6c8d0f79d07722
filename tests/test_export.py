"""tools/export.py's traced formats (export, jit, onnx) without the optional extras: the input size
of an adapter that takes any size, and the check that the bare encoder gives the model's own
features (an adapter whose tokens are more than patchify + projection + position is refused)."""
from __future__ import annotations

import os

import gin
import pytest
import torch

from helpers import SMOKE, fast_params, run_train


def test_an_adapter_without_a_fixed_size_needs_an_input_shape(tmp_path, capsys):
    import export

    run = str(tmp_path / "run")
    assert run_train(["--gin", "gin/audio_mae_cpu.gin", "--gin", SMOKE, "--workdir", run,
                      *fast_params("train.steps=1")]) == 0
    args = ["--checkpoint", os.path.join(run, "checkpoints", "last.pt"), "--format", "export", "--out",
            str(tmp_path / "a.pt2")]
    assert export.main(args) == 2
    error = capsys.readouterr().err
    assert "AudioAdapter takes inputs of any size" in error and "--input-shape C,*S" in error
    assert export.main(args + ["--input-shape", "1,64,31"]) == 2  # the recipe's 32 mel bins, not 31
    assert "(1, 64, 31) per sample, the recipe expects (1, 64, 32)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a.pt2")
    assert export.main(args + ["--input-shape", "1,64,32"]) == 0
    with torch.no_grad():
        x = torch.randn(3, 1, 64, 32)
        from unimask.weights.build import model_from_checkpoint

        model, _ = model_from_checkpoint(args[1])
        expected, _ = model.eval().features({"fbank": x})
        torch.testing.assert_close(torch.export.load(args[-1]).module()(x), expected, rtol=1e-5, atol=1e-5)


def test_a_bare_encoder_that_differs_from_the_model_is_refused():
    import export

    from unimask.cli import parse_gin
    from unimask.weights.export import BareEncoder

    parse_gin(["gin/image_mae_cpu.gin", SMOKE])
    model = gin.query_parameter("train.model").scoped_configurable_fn().eval()
    example = torch.randn(2, 1, 32, 32)
    bare = BareEncoder(model.adapter, model.encoder)
    export.check_bare(bare, model, example)  # the real one passes
    bare.pos += torch.randn_like(bare.pos)  # as if the adapter added something the bare encoder does not
    with pytest.raises(ValueError, match="not a plain patchify"):
        export.check_bare(bare, model, example)
