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

``build_unlabeled`` (target ``kicad3d-unlabeled``) writes the package's other 78 families, at
most MAX_PER_OTHER_FAMILY parts each, into one flat folder ``<out>/<Family>__<part>.npy``: no
class folders, so PointCloudDataset gives them no label. It is pretraining data beside the
labeled train split (Point-MAE pretrains on ShapeNet, then fine-tunes on ScanObjectNN); no part
of a labeled family is in it, so the labeled test shapes stay unseen.
"""
from __future__ import annotations

import hashlib
import shutil
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
MAX_PER_OTHER_FAMILY = 60  # the unlabeled set: 8 pin header / socket families of 156-278 near-copies would swamp it
LICENSE = ("License: CC-BY-SA 4.0 with the KiCad library exception (KiCad Community, kicad StepUp and the other "
           "authors named in the package's copyright file).")


def extract(src: Path, folder: str, members: list, wildcards: bool = False) -> Path:
    """Members of the cached .deb (exact names, or shell patterns with `wildcards`), unpacked
    into src/<folder> -> the 3dmodels folder there. Unpacked again when the members asked for
    differ from the last unpack's, the .deb is another one, or that unpack was interrupted (its
    marker, naming the .deb, is written last)."""
    root = src / folder
    marker, wanted = root / ".extracted", root / ".members"  # members in a file, not argv: thousands
    listing = "".join(f"{m}\n" for m in members)
    deb = cached_deb(PACKAGE, src)
    if not (marker.is_file() and marker.read_text().strip() == deb.name and wanted.is_file()
            and wanted.read_text() == listing):
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        wanted.write_text(listing)
        tar = subprocess.Popen(["tar", "-x", "--wildcards" if wildcards else "--no-wildcards", "-C", str(root),
                                "--files-from", str(wanted)], stdin=subprocess.PIPE)
        dpkg = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar.stdin, check=False)
        tar.stdin.close()
        if tar.wait() != 0 or dpkg.returncode != 0:
            raise SourceMissing(f"could not unpack {deb} (dpkg-deb {dpkg.returncode}, tar {tar.returncode})")
        marker.write_text(deb.name + "\n")
    return root / MODELS


def unpack_families(src: Path) -> Path:
    """The .wrl files of FAMILIES, unpacked once from the cached .deb -> the 3dmodels folder."""
    patterns = [f"./{MODELS}/{family}.3dshapes/*.wrl" for family in FAMILIES]
    return extract(src, f"{PACKAGE}-wrl", patterns, wildcards=True)


def deb_models(src: Path) -> dict:
    """Family -> sorted .wrl member names (./usr/share/...) of the cached .deb, listed, not unpacked."""
    listing = subprocess.run(["dpkg-deb", "--contents", str(cached_deb(PACKAGE, src))],
                             capture_output=True, text=True, check=True).stdout
    families = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)  # mode owner size date time name
        name = fields[-1] if len(fields) == 6 and fields[0].startswith("-") else ""  # regular files only
        folder = name.rsplit("/", 2)[-2] if name.count("/") >= 2 else ""
        if name.endswith(".wrl") and folder.endswith(".3dshapes"):
            families.setdefault(folder[:-len(".3dshapes")], []).append(name)
    return {family: sorted(names) for family, names in families.items()}


def is_test(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < TEST_PERCENT


def thin(paths: list, keep: int) -> list:
    """Evenly spaced `keep` of the sorted paths (all of them when there are fewer)."""
    if len(paths) <= keep:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, keep).round().astype(int)]


def sample_part(path: Path, target: Path) -> str:
    """One part's mesh -> POINTS surface points saved at `target` ('' when written, else why not).
    Deterministic: the surface sample is seeded by the file name."""
    from modalities.points.clouds import sample_surface
    from modalities.points.files import read_point_file

    part = f"{path.parent.name}/{path.name}"
    try:
        vertices, faces = read_point_file(str(path))
    except ValueError as err:  # e.g. Transform nodes: reported, not guessed at
        return f"{part}: {str(err).split(': ', 1)[-1]}"
    if faces is None:
        return f"{part}: no faces"
    seed = int(hashlib.sha1(path.name.encode()).hexdigest(), 16) % 2**32
    points = sample_surface(vertices, faces, POINTS, np.random.default_rng(seed)).astype(np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, points)
    return ""


def skipped_lines(skipped: list) -> str:
    return f"\nSkipped {len(skipped)} file(s):\n" + "".join(f"- {s}\n" for s in skipped) if skipped else ""


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> str:
    models = unpack_families(src)
    out_dir = fresh_dir(out_dir)
    counts, skipped = {"train": 0, "test": 0}, []
    for family in FAMILIES:
        for path in thin(sorted((models / f"{family}.3dshapes").glob("*.wrl")), MAX_PER_CLASS):
            split = "test" if is_test(path.name) else "train"
            why_not = sample_part(path, out_dir / family / split / (path.stem + ".npy"))
            skipped += [why_not] if why_not else []
            counts[split] += not why_not
    (out_dir / "README.md").write_text(
        f"# KiCad 3-D package models as point clouds\n\nBuilt by `python tools/make_sample_data.py kicad3d` from "
        f"Debian's `{PACKAGE}` ({MODELS}/<Family>.3dshapes/*.wrl). {len(FAMILIES)} families (the labels), at most "
        f"{MAX_PER_CLASS} parts each; {counts['train']} train / {counts['test']} test shapes, {POINTS} surface "
        f"points each. {LICENSE}\n" + skipped_lines(skipped))
    return f"{out_dir}: {counts['train']} train / {counts['test']} test shapes in {len(FAMILIES)} families, " \
           f"{len(skipped)} skipped"


def build_unlabeled(out_dir: Path, src: Path = DEFAULT_SRC) -> str:
    """Every other family of the package, at most MAX_PER_OTHER_FAMILY parts each (evenly
    thinned), as one flat folder of unlabeled point sets: extra pretraining data, as Point-MAE
    pretrains on ShapeNet before fine-tuning on ScanObjectNN. No labeled family's part is here,
    so the labeled test shapes stay unseen."""
    chosen = {family: thin(names, MAX_PER_OTHER_FAMILY)
              for family, names in sorted(deb_models(src).items()) if family not in FAMILIES}
    models = extract(src, f"{PACKAGE}-wrl-unlabeled", [name for names in chosen.values() for name in names])
    out_dir = fresh_dir(out_dir)
    written, skipped = 0, []
    for family, names in chosen.items():
        for name in names:
            path = models / f"{family}.3dshapes" / name.rsplit("/", 1)[-1]
            why_not = sample_part(path, out_dir / f"{family}__{path.stem}.npy")
            skipped += [why_not] if why_not else []
            written += not why_not
    (out_dir / "README.md").write_text(
        f"# KiCad 3-D package models as unlabeled point clouds\n\nBuilt by `python tools/make_sample_data.py "
        f"kicad3d-unlabeled` from Debian's `{PACKAGE}`: the {len(chosen)} families that `data/kicad3d` does not "
        f"label, at most {MAX_PER_OTHER_FAMILY} parts each, {written} shapes of {POINTS} surface points in one "
        f"folder (`<Family>__<part>.npy`; no class folders, so no labels). {LICENSE}\n" + skipped_lines(skipped))
    return f"{out_dir}: {written} unlabeled shapes from {len(chosen)} other families, {len(skipped)} skipped"
