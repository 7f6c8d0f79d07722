"""Point/mesh sample data: CGAL example meshes in ModelNet-style folders and a labelled LiDAR scan.

Source: Debian's ``libcgal-demo`` (5.5.1-2), ``/usr/share/doc/libcgal-dev/data.tar.gz``
(``data/meshes/*.off``, ``data/points_3/b9_training.ply``). License: the CGAL library is
LGPL-3+/GPL-3+, but its Debian ``copyright`` file puts every file without an explicit notice
(examples, demo data) under CC0 1.0, and these data files carry none.

Why: real meshes of varied shape (organic, mechanical, primitive, tori) give a small
mesh-classification set, and the b9 scan is a real airborne LiDAR tile with per-point
ground/vegetation/roof labels for point segmentation. The meshes are copied byte for byte;
the scan is reduced to 20000 points (all labelled points kept) and written without its
colour fields, which only encode the label.

Build needs: ``numpy`` (PLY and OFF are read by the small readers below). Deterministic:
the unlabelled points are drawn with seed 0 and kept in their original order.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from .sources import DEFAULT_SRC, SourceMissing, deb_tree, fresh_dir

SEED = 0
DATA_IN_DEB = "usr/share/doc/libcgal-dev/data.tar.gz"
LIDAR_IN_TAR = "data/points_3/b9_training.ply"
# Picked by name from CGAL's data/meshes (all < 150 KB, valid OFF that also
# parses with torch_geometric.io.read_off, i.e. no blank line after counts).
MESHES = {
    "organic": ["elk", "pig", "head"],
    "mechanical": ["ALSTOM_TEST4", "pinion", "rotor_small"],
    "primitive": ["geosphere", "larger_sphere", "cylinder"],
    "torus": ["eight", "double-torus-3-holes", "double-torus-example"],
}
MAX_POINTS = 20000
PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4",
             "uint": "u4", "float": "f4", "double": "f8"}
LIDAR_COMMENT = ("CGAL data/points_3/b9_training.ply subsample; "
                 "label -1=unlabelled 0=ground 1=vegetation 2=roof")


def read_off_counts(path: Path) -> tuple[int, int]:
    """Minimal OFF validation: header, counts and face indices in range."""
    toks = [t for line in path.read_text().splitlines()
            for t in line.split("#")[0].split()]
    if not toks[0].endswith("OFF"):
        raise ValueError(f"{path}: not an OFF file")
    nv, nf = int(toks[1]), int(toks[2])
    pos, faces = 4 + 3 * nv, []
    for _ in range(nf):
        k = int(toks[pos])
        faces.extend(int(t) for t in toks[pos + 1: pos + 1 + k])
        pos += 1 + k
    if faces and not 0 <= min(faces) <= max(faces) < nv:
        raise ValueError(f"{path}: face index out of range")
    return nv, nf


def read_ply(path: Path) -> np.ndarray:
    """Read the vertex element of a binary little-endian or ASCII PLY."""
    raw = path.read_bytes()
    end = raw.index(b"end_header") + len(b"end_header")
    end = raw.index(b"\n", end) + 1
    header = raw[:end].decode("ascii").splitlines()
    fmt = header[1].split()[1]
    n, props = 0, []
    for line in header:
        t = line.split()
        if t[:2] == ["element", "vertex"]:
            n = int(t[2])
        elif t[0] == "property" and n and t[1] != "list":
            props.append((t[2], "<" + PLY_TYPES[t[1]]))
    dt = np.dtype(props)
    if fmt == "binary_little_endian":
        return np.frombuffer(raw, dt, count=n, offset=end).copy()
    rows = np.loadtxt(raw[end:].decode().splitlines()[:n], ndmin=2)
    return np.array([tuple(r) for r in rows], dtype=dt)


def write_ply(path: Path, arr: np.ndarray, comment: str) -> None:
    """Write a structured array as a binary little-endian PLY vertex element."""
    inv = {v: k for k, v in PLY_TYPES.items()}
    props = "".join(f"property {inv[arr.dtype[n].str[1:]]} {n}\n" for n in arr.dtype.names)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment {comment}\n"
              f"element vertex {len(arr)}\n{props}end_header\n")
    packed = np.empty(len(arr), [(n, arr.dtype[n].newbyteorder("<")) for n in arr.dtype.names])
    for n in arr.dtype.names:  # copy field by field: drops any gaps/offsets
        packed[n] = arr[n]
    path.write_bytes(header.encode("ascii") + packed.tobytes())


def subsample_lidar(pts: np.ndarray, rng) -> np.ndarray:
    """Keep every labelled point (label >= 0) and fill up with random unlabelled ones."""
    lab = np.flatnonzero(pts["label"] >= 0)
    unl = np.flatnonzero(pts["label"] < 0)
    keep = rng.choice(unl, size=min(len(unl), MAX_POINTS - len(lab)), replace=False)
    return pts[np.sort(np.concatenate([lab, keep]))]


def copy_meshes(tar: tarfile.TarFile, dst: Path) -> None:
    """dst/<class>/<name>.off, byte for byte from the tarball, each checked to parse."""
    for cls, names in MESHES.items():
        (dst / cls).mkdir()
        for name in names:
            data = tar.extractfile(f"data/meshes/{name}.off").read()
            (dst / cls / f"{name}.off").write_bytes(data)
            nv, nf = read_off_counts(dst / cls / f"{name}.off")
            print(f"points: {cls}/{name}.off V={nv} F={nf} {len(data)} B")


def write_lidar(source_ply: Path, dst: Path) -> None:
    """dst/b9_training.ply: the subsampled scan (x, y, z, label), round-trip checked."""
    pts = read_ply(source_ply)
    sub = subsample_lidar(pts[["x", "y", "z", "label"]], np.random.default_rng(SEED))
    dst.mkdir()
    write_ply(dst / "b9_training.ply", sub, LIDAR_COMMENT)
    back = read_ply(dst / "b9_training.ply")
    if not all(np.array_equal(back[n], sub[n]) for n in sub.dtype.names):
        raise RuntimeError("PLY round trip failed")
    labels, counts = np.unique(back["label"], return_counts=True)
    print(f"points: lidar {len(pts)} -> {len(back)} points, "
          f"labels {dict(zip(labels.tolist(), counts.tolist()))}")


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """ModelNet-style OFF folders + lidar/b9_training.ply in out_dir, from CGAL's data."""
    tgz = deb_tree("libcgal-demo", src) / DATA_IN_DEB
    if not tgz.exists():
        raise SourceMissing(f"{tgz} missing: libcgal-demo layout changed?")
    dst = fresh_dir(Path(out_dir))
    source_ply = Path(src) / "b9_training.ply"  # read_ply reads files, not tar members
    with tarfile.open(tgz) as tar:
        copy_meshes(tar, dst)
        source_ply.write_bytes(tar.extractfile(LIDAR_IN_TAR).read())
    write_lidar(source_ply, dst / "lidar")
