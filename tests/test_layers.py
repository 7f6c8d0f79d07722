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
