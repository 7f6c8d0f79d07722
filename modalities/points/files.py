"""Point and mesh files -> (vertices [V, 3] float64, triangles [F, 3] int64 | None).

PLY (ascii, binary little / big endian, ragged face lists) is read with `plyfile`; STL with
`trimesh`. OFF, OBJ and VRML 2.0 keep readers of their own: trimesh 5.2 and meshio 5 were measured on this
project's format tests and fail valid files (meshio reads only triangular OFF faces, trimesh
rejects OBJ's negative relative indices and big-endian PLYs with mixed polygon sizes). Clouds
(.xyz / .txt rows, .npy / .npz arrays) are numpy. Every error says what is wrong with the file;
read_point_file names the file. Sizes are checked before a file is read (modalities/limits.py):
a PLY header's element counts and an array's .npy header against PointCloudDataset.max_points.
"""
from __future__ import annotations

import os
import re
from typing import List

import numpy as np

from modalities.limits import (MAX_POINTS, POINT_VALUES, VALUE_BYTES, Limit, SizeLimitError, check_dtypes,
                              declared_arrays, member_text)
from unimask.shards import open_sample, readable

POINT_EXTS = (".ply", ".off", ".obj", ".stl", ".wrl", ".xyz", ".txt", ".npy", ".npz")


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


MAX_PLY_HEADER_BYTES = 16 * 2**20  # a header is text up to end_header: real ones are a few hundred bytes


def ply_header_lines(path: str, max_bytes: int = MAX_PLY_HEADER_BYTES) -> List[str]:
    """The header lines after 'ply', split as plyfile splits them (the newline is whatever follows
    'ply': LF, CR or CRLF; no cap on a line's length or the number of lines), up to and without
    'end_header'. A header that does not end (end of file, or more than max_bytes) is an error:
    plyfile would read it to its end."""
    with open_sample(path) as f:
        head = f.read(5)
        if head[:3] != b"ply" or head[3:4] not in (b"\n", b"\r"):
            return []  # plyfile says what is wrong with it
        nl = b"\r\n" if head[3:5] == b"\r\n" else head[3:4]
        f.seek(3 + len(nl))
        buffer, end, marker = bytearray(nl), -1, nl + b"end_header" + nl
        while end < 0:
            chunk = f.read(1 << 16)
            if not chunk:  # plyfile too needs the newline after end_header
                raise ValueError("the PLY header does not end (no 'end_header' line before the end of the file)")
            start = max(0, len(buffer) - len(marker))
            buffer += chunk
            end = buffer.find(marker, start)
            if (end < 0 and len(buffer) - len(nl) > max_bytes) or end - len(nl) + len(marker) > max_bytes:
                raise SizeLimitError(f"{path}: the PLY header does not end within {max_bytes:,} bytes "
                                     "(no 'end_header' line); a genuine header is a few hundred bytes")
    try:
        text = bytes(buffer[len(nl):end]).decode("ascii")
    except UnicodeDecodeError as err:
        raise ValueError(f"the PLY header is not ASCII text ({err})") from None
    return text.split(nl.decode("ascii"))


def ply_element_counts(path: str) -> dict:
    """{element name: declared count} from a PLY header, read as plyfile reads it: every line up to
    end_header, a stripped line's first word 'element', then exactly two fields and int(count) (which
    takes '+1000', '1_000' and surrounding whitespace). Elements of the same name add up. Lines
    plyfile would refuse are skipped here: plyfile refuses them before allocating anything."""
    counts = {}
    for line in ply_header_lines(path):
        line = line.strip()
        if not line or line.split(None, 1)[0] != "element":
            continue
        fields = line[len("element") + 1:].strip().split()
        if len(fields) != 2:
            continue
        try:
            count = int(fields[1])
        except ValueError:
            continue
        counts[fields[0]] = counts.get(fields[0], 0) + max(count, 0)
    return counts


def check_ply_header(path: str, max_points: Limit):
    """Vertices against max_points, faces and other elements against 2 x max_points (a closed
    triangle mesh has about twice as many faces as vertices): before plyfile allocates them."""
    for name, count in ply_element_counts(path).items():
        limit = max_points if name == "vertex" else max_points.times(2)
        limit.check(path, f"the PLY header's element {name!r}", count, "rows")


def read_ply(path: str, max_points: Limit = Limit(MAX_POINTS, "PointCloudDataset.max_points")):
    """Vertex x, y, z and faces (any polygon sizes) of a PLY file, with plyfile. Triangle lists are
    first read with their length known (one numpy read), other lists row by row."""
    import plyfile

    with open_sample(path) as f:
        if f.read(3) != b"ply":
            raise ValueError("not a PLY file (no 'ply' magic line)")
    check_ply_header(path, max_points)
    try:
        try:
            ply = plyfile.PlyData.read(readable(path), known_list_len={"face": {"vertex_indices": 3, "vertex_index": 3}})
        except plyfile.PlyElementParseError as err:
            if "list length" not in str(err):
                raise
            ply = plyfile.PlyData.read(readable(path))  # mixed polygon sizes
    except plyfile.PlyElementParseError as err:
        raise ValueError(f"PLY body is truncated or malformed ({err})") from None
    except plyfile.PlyHeaderParseError as err:
        raise ValueError(f"not a PLY file: bad header ({err})") from None
    names = [element.name for element in ply.elements]
    if "vertex" not in names or not all(axis in ply["vertex"].data.dtype.names for axis in "xyz"):
        raise ValueError("PLY file has no vertex element with x, y, z properties")
    vertex = ply["vertex"].data
    vertices = np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], 1)
    if "face" not in names or ply["face"].count == 0:
        return vertices, None
    face = ply["face"].data
    key = next((k for k in ("vertex_indices", "vertex_index") if k in face.dtype.names), None)
    if key is None:
        raise ValueError(f"PLY face element has no vertex_indices list (properties: {face.dtype.names})")
    polygons = face[key]
    return vertices, fan_triangles(np.stack(polygons) if polygons.dtype != object else list(polygons))


def read_stl(path: str):
    """ASCII or binary STL with trimesh; vertices in file order (no merging)."""
    import trimesh

    try:
        mesh = trimesh.load(readable(path), file_type="stl", process=False, force="mesh")
    except Exception as err:  # trimesh raises many kinds for a bad file
        raise ValueError(f"not a readable STL file ({type(err).__name__}: {err})") from None
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def content_lines(path: str, comment: str = "#") -> List[str]:
    """Text lines with comments and blanks removed; a binary file is a clear error."""
    with open_sample(path) as f:
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


def check_numpy_points(path: str, max_points: Limit):
    """Every array an .npy / .npz declares: at most max_points rows, and at most POINT_VALUES
    values a point in all (a [10, 1e9] array is no cloud of 10 points), numeric (check_dtypes: a
    (100, 3) array of |S4000000 is 300 values and 1.2 GB) and within VALUE_BYTES a value."""
    arrays = declared_arrays(path)
    check_dtypes(path, arrays)
    for key, declared in arrays.items():
        what = member_text(key, declared)
        rows = declared.shape[0] if declared.shape else declared.elements
        max_points.check(path, what, rows, "points", declared.nbytes)
        values = max_points.times(POINT_VALUES)
        values.check(path, what, declared.elements, f"values (up to {POINT_VALUES} a point)", declared.nbytes)
        values.times(VALUE_BYTES).check(path, what, declared.nbytes, f"bytes ({VALUE_BYTES} a value)")


def read_numpy(path: str, max_points: Limit = Limit(MAX_POINTS, "PointCloudDataset.max_points")):
    """.npy [N, 3+] array, or .npz holding one (key points / xyz / pc / data, or its only array)."""
    try:
        check_numpy_points(path, max_points)
        data = np.load(readable(path), allow_pickle=False)
    except SizeLimitError:
        raise
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


def vrml_numbers(text: str, dtype) -> np.ndarray:
    """A VRML field's values (commas and whitespace both separate) -> a flat array."""
    return np.array(text.replace(",", " ").split(), dtype=dtype)


def read_vrml(path: str):
    """VRML 2.0 (.wrl) as KiCad's 3-D package models and many CAD exporters write it: every
    Shape's IndexedFaceSet (`coord Coordinate { point [...] }` and `coordIndex [...]`, faces
    ended by -1) merged into one mesh. Transform nodes and shared (`USE`d) coordinates would need
    a scene graph: such files are rejected, not read with their parts in the wrong place."""
    with open_sample(path, "r", errors="replace") as f:
        text = f.read()
    if not text.startswith("#VRML V2.0"):
        raise ValueError(f"not a VRML 2.0 file: first line is {text.splitlines()[0][:40] if text else ''!r}")
    text = re.sub(r"#[^\n]*", "", text)  # comments
    if re.search(r"\bTransform\b", text):
        raise ValueError("VRML Transform nodes are not supported (only flat IndexedFaceSets)")
    vertices, triangles, offset = [], [], 0
    for chunk in text.split("IndexedFaceSet")[1:]:
        points = re.search(r"\bpoint\s*\[([^\]]*)\]", chunk)
        index = re.search(r"\bcoordIndex\s*\[([^\]]*)\]", chunk)
        if points is None or index is None:
            raise ValueError("an IndexedFaceSet without its own coord point [...] or coordIndex [...] "
                             "(shared USE coordinates are not supported)")
        xyz = vrml_numbers(points.group(1), np.float64)
        if len(xyz) % 3:
            raise ValueError(f"a Coordinate has {len(xyz)} numbers, not a multiple of 3")
        ids = vrml_numbers(index.group(1), np.int64)
        faces, start = [], 0
        for end in np.flatnonzero(ids == -1).tolist() + ([len(ids)] if len(ids) and ids[-1] != -1 else []):
            if end - start >= 3:
                faces.append(ids[start:end])
            start = end + 1
        n = len(xyz) // 3
        tris = fan_triangles([face.tolist() for face in faces]) if faces else np.zeros((0, 3), np.int64)
        if len(tris) and (tris.min() < 0 or tris.max() >= n):
            raise ValueError(f"a face refers to vertex {int(tris.max())} of a Coordinate with {n} points")
        vertices.append(xyz.reshape(n, 3))
        triangles.append(tris + offset)
        offset += n
    if not vertices:
        raise ValueError("no IndexedFaceSet geometry")
    return np.concatenate(vertices), np.concatenate(triangles)


READERS = {".ply": read_ply, ".off": read_off, ".obj": read_obj, ".stl": read_stl, ".xyz": read_xyz,
           ".txt": read_xyz, ".npy": read_numpy, ".npz": read_numpy, ".wrl": read_vrml}


GUARDED = (".ply", ".npy", ".npz")  # readers that check declared sizes before reading (max_points)


def read_geometry(path: str, max_points: Limit = Limit(MAX_POINTS, "PointCloudDataset.max_points")):
    """-> vertices [V, 3] float64, triangles [F, 3] int64 | None; errors say what is wrong.
    max_points: the size guard (declared sizes of PLY and numpy files; the vertex count of text
    formats, whose memory their file size bounds, once read)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in READERS:
        raise ValueError(f"unsupported point file extension {ext!r} (supported: {', '.join(POINT_EXTS)})")
    try:
        vertices, faces = READERS[ext](path, max_points) if ext in GUARDED else READERS[ext](path)
        max_points.check(path, "the file", len(vertices), "vertices")
    except SizeLimitError:
        raise
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


def read_point_file(path: str, max_points: Limit = Limit(MAX_POINTS, "PointCloudDataset.max_points")):
    """Public reader: (vertices [V, 3] float64, faces [F, 3] | None), errors naming the file."""
    try:
        vertices, faces = read_geometry(path, max_points)
        check_cloud(vertices)
    except SizeLimitError:
        raise
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: {err}") from err
    return vertices, faces
