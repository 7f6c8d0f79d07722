"""Labeled 3-D shapes: KiCad's electronic-package models as a ModelNet-style point-cloud set.

Source: Debian's ``kicad-packages3d`` (6.0.10-1), ``/usr/share/kicad/3dmodels/<Family>.3dshapes/
*.wrl``: VRML 2.0 meshes of real parts (capacitors, DIP / SO / QFN chips, resistors, crystals,
TO packages, diodes, inductors, connectors, switches, varistors), one folder per package family.
License: CC-BY-SA 4.0 with the KiCad library exception (see the package's copyright file);
the derived point sets are written into a git-ignored folder and carry that license.

Why: Point-MAE's recipe needs labeled 3-D shapes (ModelNet40, ScanObjectNN), which no package
ships; these are real CAD meshes whose family is the label, and within a family the parts
differ in size, pin count and proportions, so the classes are not trivially separable.

Layout written: ``<out>/<Family>/{train,test}/<part>.npy`` (ModelNet's class/split folders),
each a [2048, 3] float32 area-uniform sample of the mesh surface in the model's own units
(PointCloudDataset normalizes and resamples). Split: 20% of each family by a hash of the file
name. At most MAX_PER_CLASS parts per family (sorted by name, evenly thinned), so the large
families do not dominate. Deterministic: surface samples are seeded per file name.
Build needs: ``dpkg-deb`` and ``tar``; only the chosen folders' .wrl files are unpacked.
"""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np

from .sources import DEFAULT_SRC, SourceMissing, cached_deb, fresh_dir

PACKAGE = "kicad-packages3d"
MODELS = "usr/share/kicad/3dmodels"
FAMILIES = ["Capacitor_THT", "Package_DIP", "Package_SO", "Package_DFN_QFN", "Inductor_THT", "Resistor_THT",
            "Crystal", "Package_TO_SOT_THT", "Diode_THT", "Connector_JST", "Button_Switch_SMD", "Varistor"]
MAX_PER_CLASS = 150
POINTS = 2048
TEST_PERCENT = 20


def unpack_families(src: Path) -> Path:
    """The .wrl files of FAMILIES, unpacked once from the cached .deb -> the 3dmodels folder."""
    root = src / f"{PACKAGE}-wrl"
    marker = root / ".extracted"
    if not marker.is_file():
        deb = cached_deb(PACKAGE, src)
        root.mkdir(parents=True, exist_ok=True)
        patterns = [f"./{MODELS}/{family}.3dshapes/*.wrl" for family in FAMILIES]
        tar = subprocess.Popen(["tar", "-x", "--wildcards", "-C", str(root), *patterns], stdin=subprocess.PIPE)
        dpkg = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar.stdin, check=False)
        tar.stdin.close()
        if tar.wait() != 0 or dpkg.returncode != 0:
            raise SourceMissing(f"could not unpack {deb} (dpkg-deb {dpkg.returncode}, tar {tar.returncode})")
        marker.write_text(deb.name + "\n")
    return root / MODELS


def is_test(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < TEST_PERCENT


def thin(paths: list, keep: int) -> list:
    """Evenly spaced `keep` of the sorted paths (all of them when there are fewer)."""
    if len(paths) <= keep:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, keep).round().astype(int)]


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> str:
    from modalities.points.clouds import sample_surface
    from modalities.points.files import read_point_file

    models = unpack_families(src)
    out_dir = fresh_dir(out_dir)
    counts, skipped = {"train": 0, "test": 0}, []
    for family in FAMILIES:
        for path in thin(sorted((models / f"{family}.3dshapes").glob("*.wrl")), MAX_PER_CLASS):
            try:
                vertices, faces = read_point_file(str(path))
            except ValueError as err:  # e.g. Transform nodes: reported, not guessed at
                skipped.append(f"{path.name}: {str(err).split(': ', 1)[-1]}")
                continue
            if faces is None:
                skipped.append(f"{path.name}: no faces")
                continue
            seed = int(hashlib.sha1(path.name.encode()).hexdigest(), 16) % 2**32
            points = sample_surface(vertices, faces, POINTS, np.random.default_rng(seed)).astype(np.float32)
            split = "test" if is_test(path.name) else "train"
            target = out_dir / family / split / (path.stem + ".npy")
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, points)
            counts[split] += 1
    (out_dir / "README.md").write_text(
        f"# KiCad 3-D package models as point clouds\n\nBuilt by `python tools/make_sample_data.py kicad3d` from "
        f"Debian's `{PACKAGE}` ({MODELS}/<Family>.3dshapes/*.wrl). {len(FAMILIES)} families (the labels), at most "
        f"{MAX_PER_CLASS} parts each; {counts['train']} train / {counts['test']} test shapes, {POINTS} surface "
        f"points each. License: CC-BY-SA 4.0 with the KiCad library exception (KiCad Community, kicad StepUp "
        f"and the other authors named in the package's copyright file).\n"
        + (f"\nSkipped {len(skipped)} file(s):\n" + "".join(f"- {s}\n" for s in skipped) if skipped else ""))
    return f"{out_dir}: {counts['train']} train / {counts['test']} test shapes in {len(FAMILIES)} families, " \
           f"{len(skipped)} skipped"
