"""The import arrows point down: the core (`unimask/`) imports neither the adapters
(`modalities/`) nor the command-line tools (`tools/`); adapters are found through the
`unimask.modalities` entry-point group (pyproject.toml) or named by the CLIs."""
import ast
import os
import re
import subprocess
import sys

from helpers import ROOT


def imported_packages(path):
    """The top-level package of every import statement in a file (relative imports left out)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield node.args[0].value.split(".")[0]


def test_core_imports_neither_adapters_nor_tools():
    upward = []
    for folder, _, files in os.walk(os.path.join(ROOT, "unimask")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                upward += [f"{os.path.relpath(path, ROOT)} imports {package}" for package in imported_packages(path)
                           if package in ("modalities", "tools", "common")]
    assert not upward, upward


def test_adapters_are_found_through_the_entry_point_group():
    script = ("import sys; from unimask.configurables import register_all; register_all(); "
              "print('modalities.image' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=os.path.join(ROOT, "data"), capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


PROBE = re.compile(r"\bhasattr\(|\bgetattr\(|inspect\.signature\(")
THIRD_PARTY = re.compile(r"#\s*(torch|timm|gin)\b")


def test_the_core_asks_its_own_classes_nothing():
    """Models, adapters, encoders, decoders and maskers declare every capability on their base
    classes (unimask/interfaces.py), so the core calls them instead of asking what they have. The
    probes that remain look at torch's or timm's objects, or read a gin configurable's declared
    defaults, and say so in a `# torch` / `# timm` / `# gin` comment on their line."""
    probes = []
    for folder, _, files in os.walk(os.path.join(ROOT, "unimask")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    probes += [f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}" for i, line in enumerate(f, 1)
                               if PROBE.search(line.split("#")[0]) and not THIRD_PARTY.search(line)]
    assert not probes, "\n".join(probes)


def python_files(*tops):
    for top in tops:
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            yield from (os.path.join(folder, name) for name in files if name.endswith(".py"))


def test_library_files_stay_small():
    """One concern per file: no module of unimask/ or modalities/ grows past 500 lines."""
    long = []
    for path in python_files("unimask", "modalities"):
        with open(path) as f:
            count = sum(1 for _ in f)
        if count > 500:
            long.append(f"{os.path.relpath(path, ROOT)}: {count} lines")
    assert not long, long


def test_tools_are_scripts_not_a_library():
    """tools/ is argument parsing plus calls into unimask/ and modalities/: no tool edits
    sys.path or loads another tool by its file path (the package is installed: pip install -e .)."""
    offenders = []
    for path in python_files("tools"):
        with open(path) as f:
            for i, line in enumerate(f, 1):
                code = line.split("#")[0]
                if "sys.path" in code or "spec_from_file_location" in code or re.search(r"^\s*from common import", code):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_model_class_answers_the_model_contract():
    """The five model families share PretrainingModel and hand the trainer a StepOutput: a
    classifier's forward on a labeled batch gives loss and train_top1 as a StepOutput like the
    masked model's, so the trainer never asks which it holds."""
    import torch

    from helpers import tiny_image_model
    from unimask.interfaces import PretrainingModel, StepOutput
    from unimask.models.classifier import Classifier
    from unimask.models.multimodal import MultiModalModel
    from unimask.models.siamese import SiameseModel
    from unimask.models.vq import VQTokenizer

    for cls in (Classifier, MultiModalModel, SiameseModel, VQTokenizer):
        assert issubclass(cls, PretrainingModel), cls
    model = tiny_image_model()
    batch = {"image": torch.rand(2, 3, 16, 16), "label": torch.tensor([0, 1])}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, StepOutput) and out.loss.ndim == 0 and out.mask.masked.sum(1).tolist() == [12, 12]
    assert isinstance(model(batch, mask_only=True), StepOutput)
    classifier = Classifier(model.adapter, model.encoder, num_classes=2)
    scored = classifier(batch)
    assert isinstance(scored, StepOutput) and scored.mask is None and "train_top1" in scored.stats


def test_every_contract_the_core_calls_has_one_home():
    """DESIGN v3: the bases of every part the models call live in unimask/interfaces.py, and every
    shipped masker, schedule and target derives from them (no second base elsewhere); a shipped loss
    has the Loss shape: per-token values [B, M] from [B, M, T] predictions."""
    import inspect

    import torch

    import unimask.interfaces as interfaces
    import unimask.losses as losses
    import unimask.masking as masking
    import unimask.masking.schedules as schedules
    import unimask.targets as targets

    homes = {name: getattr(interfaces, name).__module__ for name in
             ("ModalityAdapter", "Encoder", "Decoder", "Masker", "RatioSchedule", "Target", "Loss",
              "StepOutput", "PretrainingModel")}
    assert set(homes.values()) == {"unimask.interfaces"}, homes
    for module, base, suffix in ((masking, interfaces.Masker, "Masker"),
                                 (schedules, interfaces.RatioSchedule, "Ratio"), (targets, interfaces.Target, "Target")):
        shipped = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                   if cls.__module__.startswith(module.__name__) and cls.__name__.endswith(suffix)]
        assert shipped, module.__name__
        for cls in shipped:
            assert issubclass(cls, base), (cls, base)
    pred, target = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    for loss in (losses.MSELoss(), losses.L1Loss(), losses.SmoothL1Loss()):
        assert loss(pred, target).shape == (2, 5)
    assert not hasattr(masking, "Masker") and not hasattr(targets, "Target")  # no second home by re-export
