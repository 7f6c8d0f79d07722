"""tools/sample_data/kicad3d.py on a small .deb built here: the labeled ModelNet-style folders,
the unlabeled set of the other families (thinned, flat, no labeled family, skips named), and
the two read together as pretraining data with labels only where the folders give them."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, SMOKE, load_tool
from modalities.points.datasets import PointCloudDataset
from tools.sample_data import kicad3d
from unimask.files import NoSplitError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def tetrahedron(size: float) -> str:
    """A KiCad-style VRML 2.0 part: one IndexedFaceSet, a tetrahedron of edge `size` at the origin."""
    return ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet\n{ coordIndex [0,1,2,-1,0,1,3,-1,0,2,3,-1,1,2,3,-1]\n"
            f"coord Coordinate {{ point [0 0 0,{size} 0 0,0 {size} 0,0 0 {size}]}}\n}}}}\n")


TRANSFORMED = "#VRML V2.0 utf8\nTransform { children [ Shape { } ] }\n"
PARTS = {"Capacitor_THT": 6, "Package_DIP": 5, "Connector_PinHeader_2.54mm": 7, "Fuse": 2}


def fake_deb(tmp_path):
    """A kicad-packages3d .deb: two labeled families and two others, one part with a Transform."""
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: kicad-packages3d\nVersion: 0.1\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: t\n")
    for family, count in PARTS.items():
        folder = tree / kicad3d.MODELS / f"{family}.3dshapes"
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"part_{i}.wrl").write_text(tetrahedron(1 + i))
    (tree / kicad3d.MODELS / "Fuse.3dshapes" / "part_1.wrl").write_text(TRANSFORMED)
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(src / "kicad-packages3d_0.1_all.deb")],
                   check=True, capture_output=True)
    return src


def build_both(tmp_path, monkeypatch, test_percent=kicad3d.TEST_PERCENT):
    """Both folders from the fake .deb, labeling Capacitor_THT and Package_DIP, 3 other parts a
    family -> (src, labeled folder, unlabeled folder, the unlabeled build's summary)."""
    monkeypatch.setattr(kicad3d, "FAMILIES", ["Capacitor_THT", "Package_DIP"])
    monkeypatch.setattr(kicad3d, "MAX_PER_OTHER_FAMILY", 3)
    monkeypatch.setattr(kicad3d, "TEST_PERCENT", test_percent)
    src = fake_deb(tmp_path)
    labeled, unlabeled = tmp_path / "kicad3d", tmp_path / "kicad3d_unlabeled"
    summary = kicad3d.build(labeled, src)
    assert summary.endswith("in 2 families, 0 skipped") and sum(1 for _ in labeled.rglob("*.npy")) == 11  # 6 + 5
    return src, labeled, unlabeled, kicad3d.build_unlabeled(unlabeled, src)


def test_unlabeled_set_holds_the_other_families_thinned_and_reads_beside_the_labeled_one(tmp_path, monkeypatch):
    src, labeled, unlabeled, summary = build_both(tmp_path, monkeypatch)
    assert {p.parent.parent.name for p in labeled.rglob("*.npy")} == {"Capacitor_THT", "Package_DIP"}
    names = sorted(p.name for p in unlabeled.glob("*.npy"))
    # 7 pin headers thinned evenly to 3 (first, middle, last); Fuse's part_1 has a Transform: named, skipped
    assert names == ["Connector_PinHeader_2.54mm__part_0.npy", "Connector_PinHeader_2.54mm__part_3.npy",
                     "Connector_PinHeader_2.54mm__part_6.npy", "Fuse__part_0.npy"]
    assert summary.endswith("4 unlabeled shapes from 2 other families, 1 skipped")
    assert "Fuse.3dshapes/part_1.wrl: malformed WRL file: VRML Transform nodes" in (unlabeled / "README.md").read_text()
    assert not any(p.is_dir() for p in unlabeled.iterdir())  # flat: no class folders, so no labels
    cloud = np.load(unlabeled / "Fuse__part_0.npy")
    assert cloud.shape == (kicad3d.POINTS, 3) and cloud.dtype == np.float32
    assert cloud.min() >= 0 and cloud.max() <= 1 and np.abs(cloud.sum(1)).max() <= 1 + 1e-5  # on the tetrahedron

    first = {p.name: np.load(p) for p in unlabeled.glob("*.npy")}
    marker = src / f"{kicad3d.PACKAGE}-wrl-unlabeled" / ".extracted"
    unpacked_at = marker.stat().st_mtime_ns
    kicad3d.build_unlabeled(unlabeled, src)  # rebuilt from the unpacked cache: the same points
    assert marker.stat().st_mtime_ns == unpacked_at
    assert all(np.array_equal(np.load(unlabeled / name), points) for name, points in first.items())
    monkeypatch.setattr(kicad3d, "MAX_PER_OTHER_FAMILY", 4)  # other parts asked for: unpacked again
    assert kicad3d.build_unlabeled(unlabeled, src).endswith("5 unlabeled shapes from 2 other families, 1 skipped")

    both = PointCloudDataset(root=[str(labeled), str(unlabeled)], num_points=32)
    labels = [label for _, label in both.items]
    assert len(both) == len(list(labeled.glob("*/train/*.npy"))) + 5 and labels.count(None) == 5
    assert set(labels) - {None} <= {0, 1} and both[(len(both) - 1, 0)]["label"] == -1
    # no test split there: probes must read the labeled root
    with pytest.raises(NoSplitError, match="kicad3d_unlabeled"):
        PointCloudDataset(root=[str(labeled), str(unlabeled)], split="test")


def test_a_run_pretrained_on_both_folders_is_probed_on_the_labeled_one(tmp_path, monkeypatch):
    """The points3d-unlabeled workflow as users run it: train.py on labeled + unlabeled folders
    (the CLI, DataLoader workers on), then tools/eval.py with the labeled root bound for the
    probe; without that binding the probe names the folder that has no test split and holds
    out labeled train items."""
    _, labeled, unlabeled, _ = build_both(tmp_path, monkeypatch, test_percent=40)  # a test split in both families
    run = tmp_path / "run"
    subprocess.run([sys.executable, "tools/train.py", "--gin", "gin/point_mae_kicad_unlabeled_cpu.gin", "--gin", SMOKE,
                    "--gin_param", f"PointCloudDataset.root=['{labeled}', '{unlabeled}']",
                    "--gin_param", "train.steps=4", "--workdir", str(run)],
                   cwd=ROOT, check=True, timeout=300, capture_output=True)
    evaluator = load_tool("eval")
    checkpoint = str(run / "checkpoints" / "last.pt")
    n_train, n_test = len(list(labeled.glob("*/train/*.npy"))), len(list(labeled.glob("*/test/*.npy")))
    result = evaluator.evaluate(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "1",
                                 "--gin_param", f"PointCloudDataset.root='{labeled}'"])
    assert (result["n_train"], result["n_test"]) == (n_train, n_test) and n_test > 0
    # unbound: the pretraining roots have no common test split, so the probe says so and holds out
    # 20% of the train items; the unlabeled ones are never probe rows
    fallback = evaluator.evaluate(["--checkpoint", checkpoint, "--protocol", "knn", "--k", "1"])
    assert "kicad3d_unlabeled, items split 80/20" in fallback["data"]
    assert fallback["n_train"] + fallback["n_test"] == n_train
