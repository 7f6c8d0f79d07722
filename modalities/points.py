"""Point clouds (Point-MAE): mesh and cloud files -> FPS centres + kNN groups -> tokens.

A cloud of N points becomes G tokens: G centres picked by farthest point sampling, each
with its K nearest points expressed relative to the centre. The core sees patches
[B, G, K*3], coords = the xyz centres [B, G, 3] and patch_shape (K, 3); the mini-PointNet
embedding, the centre MLP position code and the Chamfer target stay here.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence

import gin
import numpy as np
import torch
from torch import nn

from modalities.base import ModalityAdapter
from unimask.data import SampleDataset
from unimask.files import check_split, list_split_files
from unimask.losses import ChamferLoss
from unimask.tokens import Tokens, gather_tokens

POINT_EXTS = (".ply", ".off", ".obj", ".xyz", ".txt", ".npy", ".npz")


# ---- sampling and grouping (batched, pure torch, CPU and GPU) -------------------------------
@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, n_samples: int, random_start: bool = False,
                          generator: Optional[torch.Generator] = None, backend: str = "torch") -> torch.Tensor:
    """xyz [B, N, C] -> [B, n_samples] long indices of distinct points, each the farthest
    from those already picked. Starts at point 0 (as pointnet2's CUDA op) or at a random
    point drawn from `generator`. Chosen points are never picked again, so indices stay
    distinct even when the cloud holds duplicates (clouds padded by resampling)."""
    batch, n, _ = xyz.shape
    if not 0 < n_samples <= n:
        raise ValueError(f"farthest_point_sample: cannot pick {n_samples} of {n} points")
    if backend == "fpsample":
        return fps_with_fpsample(xyz, n_samples)
    if backend != "torch":
        raise ValueError(f"farthest_point_sample backend must be 'torch' or 'fpsample', got {backend!r}")
    xyz = xyz if xyz.is_floating_point() else xyz.float()
    rows = torch.arange(batch, device=xyz.device)
    if random_start:
        gen_device = generator.device if generator is not None else xyz.device
        farthest = torch.randint(n, (batch,), generator=generator, device=gen_device).to(xyz.device)
    else:
        farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    picked = torch.empty(batch, n_samples, dtype=torch.long, device=xyz.device)
    min_dist = torch.full((batch, n), float("inf"), dtype=xyz.dtype, device=xyz.device)  # to the picked set
    for i in range(n_samples):
        picked[:, i] = farthest
        centre = xyz[rows, farthest]  # [B, C]
        min_dist = torch.minimum(min_dist, ((xyz - centre[:, None]) ** 2).sum(-1))
        min_dist[rows, farthest] = -1.0  # picked: below any distance, never the argmax again
        farthest = min_dist.argmax(1)
    return picked


def fps_with_fpsample(xyz: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The optional `fpsample` package (CPU, per sample, start index 0): [B, N, C] -> [B, G]."""
    try:
        import fpsample
    except ImportError as err:
        raise ImportError("farthest_point_sample(backend='fpsample') needs `pip install fpsample`") from err
    clouds = xyz.detach().float().cpu().numpy()
    picked = [np.asarray(fpsample.fps_sampling(cloud, n_samples, start_idx=0), dtype=np.int64) for cloud in clouds]
    return torch.from_numpy(np.stack(picked)).to(xyz.device)


@torch.no_grad()
def knn_indices(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """points [B, N, C], queries [B, G, C] -> [B, G, k] long: the k nearest points of each
    query, nearest first (torch.cdist + topk). Distances are taken directly, not through
    |a|^2 + |b|^2 - 2ab, whose rounding (~2e-3 on unit clouds) reorders close neighbours;
    so a query that is a point always finds itself first."""
    if k > points.shape[1]:
        raise ValueError(f"knn_indices: cannot take {k} neighbours from {points.shape[1]} points")
    dist = torch.cdist(queries.float(), points.float(), compute_mode="donot_use_mm_for_euclid_dist")  # [B, G, N]
    return dist.topk(k, dim=-1, largest=False, sorted=True).indices


def group_points(xyz: torch.Tensor, num_groups: int, group_size: int, backend: str = "torch"):
    """Point-MAE's Group: xyz [B, N, 3] -> neighbourhoods [B, G, K, 3] relative to their
    centres, centres [B, G, 3]."""
    batch = xyz.shape[0]
    centres = gather_tokens(xyz, farthest_point_sample(xyz, num_groups, backend=backend))  # [B, G, 3]
    neighbour_ids = knn_indices(xyz, centres, group_size)  # [B, G, K]
    neighbours = gather_tokens(xyz, neighbour_ids.flatten(1)).view(batch, num_groups, group_size, xyz.shape[-1])
    return neighbours - centres[:, :, None], centres


# ---- file readers: (vertices [V, 3] float64, faces [F, 3] int64 | None) -----------------------
PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def fan_triangles(polygons) -> np.ndarray:
    """Polygons (a [F, n] int array, or a list of index lists of any lengths >= 3) -> [T, 3]
    triangles (v0, vi, vi+1): exact for convex faces, which mesh formats assume."""
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2:
        by_length = {polygons.shape[1]: polygons} if len(polygons) else {}
    else:
        by_length = {}
        for poly in polygons:
            by_length.setdefault(len(poly), []).append(poly)
        by_length = {n: np.asarray(polys, dtype=np.int64) for n, polys in by_length.items()}
    triangles = []
    for n, polys in by_length.items():
        if n < 3:
            raise ValueError(f"a face has {n} vertices; faces need at least 3")
        for i in range(1, n - 1):
            triangles.append(np.stack([polys[:, 0], polys[:, i], polys[:, i + 1]], 1))
    return np.concatenate(triangles).astype(np.int64) if triangles else np.zeros((0, 3), np.int64)


def parse_ply_header(lines: List[str]):
    """-> format ('ascii' | 'binary_little_endian' | 'binary_big_endian'), elements as
    [(name, count, [(prop, dtype) or (prop, (count_dtype, item_dtype))])]."""
    fmt, elements = None, []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise ValueError("PLY property before any element")
            if words[1] == "list":
                elements[-1][2].append((words[4], (PLY_TYPES[words[2]], PLY_TYPES[words[3]])))
            else:
                elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
        else:
            raise ValueError(f"unexpected PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown PLY format {fmt!r}")
    return fmt, elements


def row_dtype(buf: bytes, offset: int, props, endian: str) -> np.dtype:
    """Structured dtype of one binary PLY row, each list sized as in the row at `offset`."""
    fields = []
    for name, t in props:
        if isinstance(t, tuple):
            count_type, item_type = np.dtype(endian + t[0]), np.dtype(endian + t[1])
            length = int(np.frombuffer(buf, count_type, 1, offset)[0])
            fields += [(name + "/count", count_type), (name, item_type, (length,))]
            offset += count_type.itemsize + length * item_type.itemsize
        else:
            fields.append((name, endian + t))
            offset += np.dtype(t).itemsize
    return np.dtype(fields)


def read_ply_binary_element(buf: bytes, offset: int, count: int, props, endian: str):
    """One binary element -> ({prop: array or list of arrays}, new offset). Scalar rows and
    lists of one length (triangle faces) are read in one np.frombuffer; ragged lists
    (mixed polygons) row by row."""
    if count == 0:
        return {name: [] for name, _ in props}, offset
    lists = [name for name, t in props if isinstance(t, tuple)]
    dtype = row_dtype(buf, offset, props, endian)
    if offset + count * dtype.itemsize <= len(buf):
        rows = np.frombuffer(buf, dtype, count, offset)
        if all((rows[name + "/count"] == rows[name].shape[1]).all() for name in lists):
            return {name: rows[name] for name, _ in props}, offset + count * dtype.itemsize
    if not lists:
        raise ValueError(f"PLY body is truncated ({len(buf) - offset} bytes left for {count} rows of {dtype.itemsize})")
    values = {name: [] for name, _ in props}
    for _ in range(count):
        for name, t in props:
            if isinstance(t, tuple):
                length = int(np.frombuffer(buf, endian + t[0], 1, offset)[0])
                offset += np.dtype(t[0]).itemsize
                values[name].append(np.frombuffer(buf, endian + t[1], length, offset))
                offset += length * np.dtype(t[1]).itemsize
            else:
                values[name].append(np.frombuffer(buf, endian + t, 1, offset)[0])
                offset += np.dtype(t).itemsize
    return values, offset


def read_ply_ascii_element(lines: List[str], count: int, props):
    """`count` text rows -> {prop: array or list of arrays}."""
    if len(lines) < count:
        raise ValueError(f"PLY body is truncated: {len(lines)} rows left for {count}")
    if not any(isinstance(t, tuple) for _, t in props):
        table = np.array([line.split()[:len(props)] for line in lines[:count]], dtype=np.float64)
        table = table.reshape(count, len(props))
        return {name: table[:, i] for i, (name, _) in enumerate(props)}
    values = {name: [] for name, _ in props}
    for line in lines[:count]:
        words, at = line.split(), 0
        for name, t in props:
            if isinstance(t, tuple):
                length = int(words[at])
                values[name].append(np.array(words[at + 1:at + 1 + length], dtype=np.int64))
                at += 1 + length
            else:
                values[name].append(float(words[at]))
                at += 1
    return values


def read_ply(path: str):
    """ASCII and binary (little/big endian) PLY; vertex x, y, z; faces if the file has them."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("not a PLY file (no 'ply' magic line or no end_header)")
    body_start = data.find(b"\n", end) + 1 if data.find(b"\n", end) >= 0 else len(data)
    fmt, elements = parse_ply_header(data[:end].decode("latin-1").splitlines())
    parsed = {}
    if fmt == "ascii":
        lines = [line for line in data[body_start:].decode("latin-1").splitlines() if line.strip()]
        for name, count, props in elements:
            parsed[name] = read_ply_ascii_element(lines, count, props)
            lines = lines[count:]
    else:
        endian, offset = "<" if fmt == "binary_little_endian" else ">", body_start
        for name, count, props in elements:
            parsed[name], offset = read_ply_binary_element(data, offset, count, props, endian)
    vertex = parsed.get("vertex")
    if vertex is None or not all(axis in vertex for axis in "xyz"):
        raise ValueError("PLY file has no vertex element with x, y, z properties")
    vertices = np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], 1)
    face_lists = [prop for element, _, props in elements if element == "face"
                  for prop, kind in props if isinstance(kind, tuple)]  # vertex_indices / vertex_index
    polygons = parsed["face"][face_lists[0]] if face_lists else []
    return vertices, fan_triangles(polygons) if len(polygons) else None


def content_lines(path: str, comment: str = "#") -> List[str]:
    """Text lines with comments and blanks removed; a binary file is a clear error."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not a text file (cannot decode it as UTF-8)") from None
    lines = (line.split(comment, 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def parse_polygons(lines: List[str]):
    """OFF face rows `n i1 .. in [colour]` -> [F, n] array when all n agree, else a list."""
    rows = [line.split() for line in lines]
    sizes = {len(row) for row in rows}
    if len(sizes) == 1:
        table = np.array(rows)
        counts = table[:, 0].astype(np.int64)
        if (counts == counts[0]).all():
            return table[:, 1:1 + counts[0]].astype(np.int64)
    return [[int(i) for i in row[1:1 + int(row[0])]] for row in rows]


def read_off(path: str):
    """OFF (also COFF/NOFF/...): header `OFF` then `nv nf ne` on the next line, or the counts on
    the header line (`OFF 8 6 0`, and ModelNet40's `OFF8 6 0`); `#` comments anywhere."""
    lines = content_lines(path)
    if not lines:
        raise ValueError("empty OFF file")
    match = re.match(r"^[A-Z4n]*OFF", lines[0])
    if not match:
        raise ValueError(f"not an OFF file: first line is {lines[0][:40]!r}")
    inline = lines[0][match.end():].split()
    counts, body = (inline, lines[1:]) if inline else ((lines[1].split() if len(lines) > 1 else []), lines[2:])
    if len(counts) < 2:
        raise ValueError("OFF header has no vertex and face counts")
    n_vertices, n_faces = int(counts[0]), int(counts[1])
    if len(body) < n_vertices + n_faces:
        raise ValueError(f"OFF file is truncated: {len(body)} data lines for {n_vertices} vertices + {n_faces} faces")
    vertices = np.array([line.split()[:3] for line in body[:n_vertices]], dtype=np.float64).reshape(n_vertices, 3)
    faces = fan_triangles(parse_polygons(body[n_vertices:n_vertices + n_faces])) if n_faces else None
    return vertices, faces


def read_obj(path: str):
    """Wavefront OBJ: `v x y z`, `f a b c ...` with a, a/t, a//n or a/t/n, 1-based or negative
    (relative) indices; polygons fan-triangulated; other records ignored."""
    vertices, polygons = [], []
    for line in content_lines(path):
        words = line.split()
        if words[0] == "v":
            vertices.append(words[1:4])
        elif words[0] == "f":
            ids = [int(w.split("/")[0]) for w in words[1:]]
            polygons.append([i - 1 if i > 0 else len(vertices) + i for i in ids])
    vertices = np.array(vertices, dtype=np.float64).reshape(-1, 3)
    return vertices, fan_triangles(polygons) if polygons else None


def read_xyz(path: str):
    """Whitespace or comma separated rows, x y z first (normals, colours, labels after)."""
    rows = []
    for line_no, line in enumerate(content_lines(path), 1):
        if line.startswith("//"):
            continue
        words = line.replace(",", " ").replace(";", " ").split()
        if len(words) < 3:
            raise ValueError(f"row {line_no} has {len(words)} column(s), need x y z: {line[:60]!r}")
        rows.append(words[:3])
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, 3), None
    except ValueError as err:
        raise ValueError(f"non-numeric coordinates ({err})") from None


def read_numpy(path: str):
    """.npy [N, 3+] array, or .npz holding one (key points / xyz / pc / data, or its only array)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"unreadable numpy file ({err})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        key = next((k for k in ("points", "xyz", "pc", "data") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"npz has no points/xyz/pc/data array (keys: {keys})")
        data = data[key]
    if data.ndim != 2 or data.shape[1] < 3:
        raise ValueError(f"array has shape {data.shape}, expected [N, 3+]")
    return np.asarray(data[:, :3], dtype=np.float64), None


READERS = {".ply": read_ply, ".off": read_off, ".obj": read_obj, ".xyz": read_xyz, ".txt": read_xyz,
           ".npy": read_numpy, ".npz": read_numpy}


def read_geometry(path: str):
    """-> vertices [V, 3] float64, triangles [F, 3] int64 | None; errors say what is wrong."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in READERS:
        raise ValueError(f"unsupported point file extension {ext!r} (supported: {', '.join(POINT_EXTS)})")
    try:
        vertices, faces = READERS[ext](path)
    except (ValueError, IndexError, KeyError) as err:  # malformed content
        raise ValueError(f"malformed {ext[1:].upper()} file: {err}") from None
    if faces is None or len(faces) == 0:
        return vertices, None
    out_of_range = faces[(faces < 0) | (faces >= len(vertices))]
    if len(out_of_range):
        raise ValueError(f"a face refers to vertex {int(out_of_range[0])} but the file has {len(vertices)} vertices")
    return vertices, faces


def check_cloud(points: np.ndarray):
    """Clouds that cannot be normalized or grouped are errors, not silent garbage."""
    if len(points) == 0:
        raise ValueError("no points")
    if len(points) == 1:
        raise ValueError("only 1 point; a cloud needs at least 2")
    bad = ~np.isfinite(points).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(points)} points have NaN or infinite coordinates")


def read_point_file(path: str):
    """Public reader: (vertices [V, 3] float64, faces [F, 3] | None), errors naming the file."""
    try:
        vertices, faces = read_geometry(path)
        check_cloud(vertices)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: {err}") from err
    return vertices, faces


# ---- cloud preparation (numpy, in DataLoader workers) -------------------------------------------
def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-weighted uniform samples on a triangle mesh: [V, 3], [F, 3] -> [n, 3]. A mesh
    whose triangles all have zero area falls back to its vertices."""
    corners = vertices[faces]  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    total = area.sum()
    if not total > 0:
        return vertices[np.unique(faces)]
    face = rng.choice(len(faces), n, p=area / total)
    sqrt_r1, r2 = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]
    return (1 - sqrt_r1) * a + sqrt_r1 * (1 - r2) * b + sqrt_r1 * r2 * c


def resample(points: np.ndarray, n: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """[N, 3] -> [n, 3]. More points than n: a random subset (ShapeNet-55's) or FPS (ModelNet's).
    Fewer (either method): every point once plus random repeats (sampling with replacement),
    so a small cloud still fills the fixed size; the adapter's FPS never picks a repeat twice."""
    if len(points) < n:
        extra = rng.choice(len(points), n - len(points), replace=True)
        return points[np.concatenate([np.arange(len(points)), extra])]
    if method == "random":
        return points[rng.choice(len(points), n, replace=False)]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    ids = farthest_point_sample(torch.from_numpy(points).float()[None], n, random_start=True, generator=gen)[0]
    return points[ids.numpy()]


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Point-MAE's pc_norm: centre on the mean, scale so the farthest point has norm 1."""
    centred = points - points.mean(0)
    radius = np.linalg.norm(centred, axis=1).max()
    if not radius > 0:
        raise ValueError("all points coincide; the cloud cannot be normalized")
    return centred / radius


def scale_and_translate(points: np.ndarray, scale_range: Sequence[float], translate: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Point-MAE's PointcloudScaleAndTranslate: a random scale per axis, then a random shift."""
    scale = rng.uniform(scale_range[0], scale_range[1], size=3)
    return points * scale + rng.uniform(-translate, translate, size=3)


@gin.configurable
class PointCloudDataset(SampleDataset):
    """Point files found under `root` (folders, recursive, class sub-folders give labels as in
    ModelNet40 / ShapeNet layouts; list files of `path [label]`; single files). Meshes are
    sampled on their surface (`mesh_samples` points, as ShapeNet-55's 8192), every cloud is
    resampled to `num_points` (`resample` 'random' or 'fps'; fewer points: with replacement),
    unit-sphere normalized and, with `augment`, scaled per axis and translated as Point-MAE.
    split: 'train' | 'val' | 'test' (ModelNet's <class>/train|test/ folders, split folders,
    list files side by side, or `test_root`; see unimask/files.py).
    Yields {'points': [num_points, 3] float32, 'label': int, -1 when none}."""

    def __init__(self, root=gin.REQUIRED, num_points: int = 1024, resample: str = "random",
                 mesh_samples: int = 8192, augment: bool = True, scale_range: Sequence[float] = (2 / 3, 3 / 2),
                 translate_range: float = 0.2, skip_bad_samples: bool = False, limit: Optional[int] = None,
                 split: str = "train", test_root=None):
        if resample not in ("random", "fps"):
            raise ValueError(f"PointCloudDataset.resample must be 'random' or 'fps', got {resample!r}")
        check_split(split, "PointCloudDataset.split")
        self.items, self.source = list_split_files(root, POINT_EXTS, split, test_root)
        self.items = self.items[:limit] if limit is not None else self.items
        self.num_points, self.resample, self.mesh_samples = num_points, resample, max(mesh_samples, num_points)
        self.augment, self.scale_range, self.translate_range = augment, tuple(scale_range), translate_range
        self.skip_bad_samples = skip_bad_samples

    def load(self, index):
        path, label = self.items[index]
        rng = np.random.default_rng(np.random.randint(2**31))  # seeded per (index, seed) by SampleDataset
        vertices, faces = read_geometry(path)
        check_cloud(vertices)
        vertices = vertices - vertices.mean(0)  # centre in float64 first: LiDAR UTM coordinates
        cloud = vertices if faces is None else sample_surface(vertices, faces, self.mesh_samples, rng)
        check_cloud(cloud)
        cloud = normalize_unit_sphere(resample(cloud, self.num_points, self.resample, rng))
        if self.augment:
            cloud = scale_and_translate(cloud, self.scale_range, self.translate_range, rng)
        return {"points": torch.from_numpy(cloud.astype(np.float32)), "label": -1 if label is None else label}


def image_to_points(image: np.ndarray, n: int, depth: float, rng: np.random.Generator) -> np.ndarray:
    """A grayscale image [H, W] -> [n, 3] points: pixels drawn with probability proportional to
    intensity (with replacement), jittered uniformly inside the pixel; x, y in pixel units, z =
    depth x intensity in [0, 1] (MNIST-style point sets, as in PointNet++'s MNIST experiment)."""
    weight = image.astype(np.float64).ravel()
    total = weight.sum()
    if not total > 0:
        raise ValueError("the image is blank: no pixel to draw points from")
    pixel = rng.choice(weight.size, n, p=weight / total)
    row, col = np.divmod(pixel, image.shape[1])
    xy = np.stack([col, image.shape[0] - 1 - row], 1) + rng.random((n, 2))  # y up, as a plot
    return np.concatenate([xy, depth * image.shape[0] * (weight[pixel] / weight.max())[:, None]], 1)


@gin.configurable
class ImagePointSetDataset(SampleDataset):
    """Labeled point sets made from an image .npz (x_<split>/y_<split>, the Fashion-MNIST sample
    by default): each image becomes `num_points` points drawn where it is bright, then unit-
    sphere normalized and, with `augment`, scaled and translated as Point-MAE. A real labeled
    train/test split for Point-MAE on data that ships with the repository.
    Yields {'points': [num_points, 3] float32, 'label': int}."""

    def __init__(self, root=gin.REQUIRED, split: str = "train", num_points: int = 512, depth: float = 0.25,
                 augment: bool = True, scale_range: Sequence[float] = (2 / 3, 3 / 2), translate_range: float = 0.2,
                 skip_bad_samples: bool = False, limit: Optional[int] = None):
        from modalities.image import read_npz_split

        self.images, labels = read_npz_split(str(root), split)
        if self.images.ndim != 3:
            raise ValueError(f"{root}: point sets are made from grayscale images [N, H, W], got "
                             f"{tuple(self.images.shape)}")
        rows = range(len(self.images) if limit is None else min(limit, len(self.images)))
        self.items = [(f"{root}[{split}][{i}]", -1 if labels is None else int(labels[i])) for i in rows]
        self.num_points, self.depth, self.augment = num_points, depth, augment
        self.scale_range, self.translate_range, self.skip_bad_samples = tuple(scale_range), translate_range, skip_bad_samples

    def load(self, index):
        # training: seeded per (index, seed) by SampleDataset; probes: the same cloud every time
        rng = np.random.default_rng(np.random.randint(2**31) if self.augment else index)
        cloud = normalize_unit_sphere(image_to_points(self.images[index], self.num_points, self.depth, rng))
        if self.augment:
            cloud = scale_and_translate(cloud, self.scale_range, self.translate_range, rng)
        return {"points": torch.from_numpy(cloud.astype(np.float32)), "label": self.items[index][1]}


# ---- the adapter ---------------------------------------------------------------------------------
class MiniPointNet(nn.Module):
    """Point-MAE's group Encoder: shared per-point MLP, max-pool, concat the pooled feature to
    every point, second MLP, max-pool. [R, K, 3] -> [R, dim]; order-invariant within a group."""

    def __init__(self, dim: int, point_dim: int = 3):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(point_dim, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                         nn.Conv1d(512, dim, 1))
        for module in self.modules():
            if isinstance(module, nn.Conv1d):  # Point-MAE's init
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:  # [R, K, 3] -> [R, dim]
        feature = self.first_conv(groups.transpose(1, 2))  # [R, 256, K]
        pooled = feature.max(2, keepdim=True).values  # [R, 256, 1]
        feature = torch.cat([pooled.expand_as(feature), feature], 1)  # [R, 512, K]
        return self.second_conv(feature).max(2).values  # [R, dim]


@gin.configurable
class PointAdapter(ModalityAdapter):
    """Point-MAE tokens: `num_groups` FPS centres x `group_size` kNN points each. Embeds the
    visible groups with a mini-PointNet; position = an MLP on the centre xyz, one MLP per
    width in `pos_dims` (encoder and decoder widths; `dim` is always included); target =
    the raw neighbourhood, scored with Chamfer-L2."""

    batch_key = "points"

    def __init__(self, num_groups: int = 64, group_size: int = 32, dim: int = 384,
                 pos_dims: Sequence[int] = (384, 384), pos_hidden: int = 128, fps_backend: str = "torch"):
        super().__init__()
        self.num_groups, self.group_size, self.fps_backend = num_groups, group_size, fps_backend
        self.target_dim = group_size * 3
        self.loss = ChamferLoss(point_dim=3)
        self.group_embed = MiniPointNet(dim)
        widths = dict.fromkeys(int(w) for w in (dim, *pos_dims))  # de-duplicated, in order
        self.centre_embed = nn.ModuleDict({str(w): nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(),
                                                                 nn.Linear(pos_hidden, w)) for w in widths})

    def tokenize(self, batch) -> Tokens:
        points = batch[self.batch_key] if isinstance(batch, dict) else batch  # [B, N, 3+]
        if points.dim() != 3 or points.shape[-1] < 3:
            raise ValueError(f"{self.batch_key} batch must be [B, N, 3+], got shape {tuple(points.shape)}")
        if points.shape[1] < max(self.num_groups, self.group_size):
            raise ValueError(f"clouds have {points.shape[1]} points, fewer than PointAdapter.num_groups="
                             f"{self.num_groups} / group_size={self.group_size}")
        neighbours, centres = group_points(points[..., :3].float(), self.num_groups, self.group_size, self.fps_backend)
        patches = neighbours.flatten(2)  # [B, G, K*3]
        return Tokens(patches, centres, patch_shape=(self.group_size, 3))

    def embed(self, patches, tokens, ids):  # [B, K_vis, K*3] -> [B, K_vis, D]
        batch, n_vis, _ = patches.shape
        groups = patches.reshape(batch * n_vis, self.group_size, 3)
        return self.group_embed(groups).view(batch, n_vis, -1)

    def pos(self, coords, dim):  # [..., 3] -> [..., dim]
        key = str(int(dim))
        if key not in self.centre_embed:
            raise ValueError(f"PointAdapter has no centre position MLP of width {dim} (built: "
                             f"{', '.join(self.centre_embed.keys())}); add it to PointAdapter.pos_dims")
        return self.centre_embed[key](coords)

    def render(self, tokens, pred, mask, path):
        """Sample 0 from two viewpoints: input groups | visible groups | visible + predicted
        hidden groups (each prediction shifted to its centre)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        centres = tokens.coords[0].detach().float().cpu()[:, None]  # [G, 1, 3]
        groups = tokens.patches[0].detach().float().cpu().view(tokens.num_tokens, -1, 3) + centres  # [G, K, 3]
        predicted = pred[0].detach().float().cpu().view(tokens.num_tokens, -1, 3) + centres
        hidden = mask.masked[0].cpu()
        panels = [("input", [(groups.reshape(-1, 3), "tab:blue")]),
                  ("visible", [(groups[~hidden].reshape(-1, 3), "tab:blue")]),
                  ("reconstruction", [(groups[~hidden].reshape(-1, 3), "tab:blue"),
                                      (predicted[hidden].reshape(-1, 3), "tab:red")])]
        fig = Figure(figsize=(9, 6))
        FigureCanvasAgg(fig)
        extent = float(groups.abs().max()) or 1.0
        for row, (elev, azim) in enumerate(((30, 45), (10, -120))):
            for col, (title, layers) in enumerate(panels):
                ax = fig.add_subplot(2, 3, row * 3 + col + 1, projection="3d")
                for xyz, colour in layers:
                    ax.scatter(xyz[:, 0], xyz[:, 2], xyz[:, 1], s=1, c=colour, depthshade=False)  # y up
                ax.view_init(elev=elev, azim=azim)
                for set_limits in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                    set_limits(-extent, extent)
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(title)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=80)
        return path
