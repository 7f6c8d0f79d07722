"""Point-MAE adapter: FPS / kNN / Chamfer against brute force, every file format, bad input
named clearly, tokens, and a model that learns to reconstruct groups."""
import os

import numpy as np
import pytest
import torch

from helpers import ROOT, fast_params, overfit, read_metrics, run_train
from modalities.points import (ImagePointSetDataset, PointAdapter, PointCloudDataset, farthest_point_sample,
                               image_to_points, knn_indices, read_point_file, sample_surface)
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder, encode_all
from unimask.losses import ChamferLoss
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel

SAMPLE_POINTS = os.path.join(ROOT, "data", "sample", "points")
SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float64)  # a unit quad in z = 0
SQUARE_TRIANGLES = [[0, 1, 2], [0, 2, 3]]


# ---- FPS, kNN, Chamfer ------------------------------------------------------------------------
def fps_reference(cloud: np.ndarray, n: int, start: int = 0) -> list:
    """Textbook FPS, one point at a time."""
    picked = [start]
    for _ in range(n - 1):
        dist = [min(((cloud[i] - cloud[j]) ** 2).sum() for j in picked) for i in range(len(cloud))]
        picked.append(int(np.argmax(dist)))
    return picked


def test_fps_matches_brute_force_and_picks_distinct_points():
    xyz = torch.randn(3, 40, 3, generator=torch.Generator().manual_seed(0))
    ids = farthest_point_sample(xyz, 12)
    assert ids.shape == (3, 12)
    for b in range(3):
        assert ids[b].tolist() == fps_reference(xyz[b].numpy().astype(np.float64), 12)
        assert len(set(ids[b].tolist())) == 12


def test_fps_stays_distinct_on_duplicates_and_random_start_is_seeded():
    cloud = torch.randn(1, 5, 3).repeat(1, 4, 1)  # 20 points, 5 places
    ids = farthest_point_sample(cloud, 20)
    assert sorted(ids[0].tolist()) == list(range(20))
    assert len({tuple(cloud[0, i].tolist()) for i in ids[0, :5]}) == 5  # the first 5 cover every place
    a = farthest_point_sample(cloud, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    b = farthest_point_sample(cloud, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cannot pick 21 of 20"):
        farthest_point_sample(cloud, 21)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fps_and_knn_on_cuda_match_cpu():
    xyz = torch.randn(4, 500, 3)
    ids = farthest_point_sample(xyz.cuda(), 32)
    assert ids.device.type == "cuda" and torch.equal(ids.cpu(), farthest_point_sample(xyz, 32))
    knn = knn_indices(xyz.cuda(), xyz[:, :8].cuda(), 16).cpu()
    assert torch.equal(knn[..., 0], torch.arange(8).expand(4, -1))


def test_fpsample_backend_matches_pure_torch():
    pytest.importorskip("fpsample")
    xyz = torch.randn(2, 200, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(farthest_point_sample(xyz, 16, backend="fpsample"), farthest_point_sample(xyz, 16))


def test_knn_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    points, queries = torch.randn(2, 60, 3, generator=gen), torch.randn(2, 7, 3, generator=gen)
    ids = knn_indices(points, queries, 5)  # [B, G, k]
    brute = ((queries[:, :, None] - points[:, None]) ** 2).sum(-1).argsort(-1)[..., :5]
    assert torch.equal(ids, brute)


def test_chamfer_matches_double_loop():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 4 * 3, generator=gen), torch.randn(2, 3, 4 * 3, generator=gen)
    loss = ChamferLoss(point_dim=3)(pred, target)  # [B, M]
    for b in range(2):
        for m in range(3):
            p, t = pred[b, m].view(4, 3), target[b, m].view(4, 3)
            sq = [[float(((p[i] - t[j]) ** 2).sum()) for j in range(4)] for i in range(4)]
            forward = sum(min(row) for row in sq) / 4  # Point-MAE's cdl2: mean squared NN distance
            backward = sum(min(sq[i][j] for i in range(4)) for j in range(4)) / 4  # ... both ways, summed
            assert loss[b, m].item() == pytest.approx(forward + backward, rel=1e-4, abs=1e-6)
    assert torch.allclose(ChamferLoss(chunk=2)(pred, target), loss, atol=1e-6)  # chunking changes nothing


# ---- file formats ----------------------------------------------------------------------------------
def write_ply_binary(path, vertices, faces, endian="<", extra_label=True):
    order = "binary_little_endian" if endian == "<" else "binary_big_endian"
    header = ["ply", f"format {order} 1.0", "comment written by test_points", f"element vertex {len(vertices)}",
              "property double x", "property double y", "property double z"]
    fields = [("x", endian + "f8"), ("y", endian + "f8"), ("z", endian + "f8")]
    if extra_label:
        header.append("property int label")
        fields.append(("label", endian + "i4"))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    rows = np.zeros(len(vertices), np.dtype(fields))
    for i, axis in enumerate("xyz"):
        rows[axis] = vertices[:, i]
    body = rows.tobytes()
    for face in faces:  # ragged lists allowed
        body += np.uint8(len(face)).tobytes() + np.asarray(face, endian + "i4").tobytes()
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode() + body)


def write_formats(folder):
    """The unit quad in every format: (file, expected triangles or None for a cloud)."""
    v = SQUARE
    files = {}
    lines = "\n".join(" ".join(map(str, p)) for p in v)
    (folder / "ascii.ply").write_text("ply\nformat ascii 1.0\ncomment quad\nelement vertex 4\nproperty float x\n"
                                      "property float y\nproperty float z\nproperty uchar red\nelement face 1\n"
                                      "property list uchar int vertex_indices\nend_header\n"
                                      + "\n".join(" ".join(map(str, p)) + " 255" for p in v) + "\n4 0 1 2 3\n")
    files["ascii.ply"] = SQUARE_TRIANGLES
    write_ply_binary(folder / "binary_le.ply", v, SQUARE_TRIANGLES, "<")
    files["binary_le.ply"] = SQUARE_TRIANGLES
    write_ply_binary(folder / "binary_be_ragged.ply", v, [[0, 1, 2], [0, 2, 3], [0, 1, 2, 3]], ">")
    files["binary_be_ragged.ply"] = SQUARE_TRIANGLES * 2
    write_ply_binary(folder / "binary_cloud.ply", v, [], "<", extra_label=False)
    files["binary_cloud.ply"] = None
    (folder / "nextline.off").write_text(f"OFF\n# a comment line\n4 1 0\n{lines}\n4 0 1 2 3  # quad\n")
    files["nextline.off"] = SQUARE_TRIANGLES
    (folder / "inline.off").write_text(f"OFF4 2 0\n{lines}\n3 0 1 2\n3 0 2 3 255 0 0\n")  # ModelNet40 header
    files["inline.off"] = SQUARE_TRIANGLES
    (folder / "spaced.off").write_text(f"OFF 4 2 0\n{lines}\n3 0 1 2\n3 0 2 3\n")
    files["spaced.off"] = SQUARE_TRIANGLES
    (folder / "mesh.obj").write_text("# quad\no quad\n" + "\n".join(f"v {p[0]} {p[1]} {p[2]}" for p in v)
                                     + "\nvt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1\nf -4//1 -2//1 -1//1\n")
    files["mesh.obj"] = SQUARE_TRIANGLES
    (folder / "cloud.xyz").write_text("// x y z\n" + lines.replace(" ", "\t") + "\n")
    (folder / "cloud.txt").write_text("\n".join(",".join(map(str, p)) + ",0,0,1" for p in v) + "\n")
    np.save(folder / "cloud.npy", np.concatenate([v, np.ones((4, 3))], 1).astype(np.float32))
    np.savez(folder / "cloud.npz", points=v)
    # VRML 2.0 as KiCad writes it: two Shapes, a triangle each, commas and line breaks mixed
    (folder / "kicad.wrl").write_text(
        "#VRML V2.0 utf8\n# a comment [ 9 9 9 ]\nShape { appearance Appearance {material DEF A Material {}}}\n"
        "Shape { geometry IndexedFaceSet\n{ creaseAngle 0.50 coordIndex [0,1,2,-1]\n"
        f"coord Coordinate {{ point [{v[0][0]} {v[0][1]} {v[0][2]},{v[1][0]} {v[1][1]} {v[1][2]},"
        f"{v[2][0]} {v[2][1]} {v[2][2]}]}}\n}}}}\n"
        "Shape { geometry IndexedFaceSet\n{ coord Coordinate { point [\n"
        f"{v[0][0]} {v[0][1]} {v[0][2]}, {v[2][0]} {v[2][1]} {v[2][2]}, {v[3][0]} {v[3][1]} {v[3][2]}]}}\n"
        "coordIndex [0, 1, 2] }}\n")  # coord before coordIndex, last face without its -1
    files["kicad.wrl"] = SQUARE_TRIANGLES
    files.update({"cloud.xyz": None, "cloud.txt": None, "cloud.npy": None, "cloud.npz": None})
    return files


def test_every_format_reads_vertices_and_faces(tmp_path):
    for name, triangles in write_formats(tmp_path).items():
        vertices, faces = read_point_file(str(tmp_path / name))
        if not name.endswith(".wrl"):  # VRML: one vertex list per Shape, concatenated (6 vertices here)
            np.testing.assert_allclose(vertices, SQUARE, err_msg=name)
        if triangles is None:
            assert faces is None, name
        else:  # the same triangles, corner for corner
            np.testing.assert_allclose(vertices[faces], np.asarray(SQUARE)[np.asarray(triangles)], err_msg=name)


def test_dataset_samples_meshes_on_their_surface_and_normalizes(tmp_path):
    files = write_formats(tmp_path)
    ds = PointCloudDataset(root=str(tmp_path), num_points=64, augment=False)
    assert len(ds) == len(files) == 13 and all(label is None for _, label in ds.items)
    for i in range(len(ds)):
        sample = ds[(i, 0)]
        points = sample["points"]
        assert points.shape == (64, 3) and points.dtype == torch.float32 and sample["label"] == -1
        assert points.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-5)
        assert points.mean(0).abs().max().item() < 1e-5
        assert points[:, 2].abs().max().item() < 1e-6  # the quad stays flat
    mesh = PointCloudDataset(root=str(tmp_path / "spaced.off"), num_points=256, augment=False)[(0, 0)]["points"]
    assert mesh.unique(dim=0).shape[0] == 256  # surface samples, not the 4 corners repeated


def test_surface_sampling_is_area_weighted():
    big = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]], np.float64)  # area 8
    small = big / 2 + [10, 0, 0]  # area 2
    points = sample_surface(np.concatenate([big, small]), np.array([[0, 1, 2], [3, 4, 5]]), 20000,
                            np.random.default_rng(0))
    on_big = points[:, 0] < 5
    assert on_big.mean() == pytest.approx(0.8, abs=0.02)
    inside = points[on_big]
    assert (inside >= -1e-9).all() and (inside[:, 0] + inside[:, 1] <= 4 + 1e-9).all()


def test_small_clouds_are_sampled_with_replacement_and_fps_resamples(tmp_path):
    cloud = np.random.default_rng(0).normal(size=(10, 3))
    np.save(tmp_path / "small.npy", cloud)
    points = PointCloudDataset(root=str(tmp_path), num_points=32, augment=False)[(0, 0)]["points"]
    assert points.shape == (32, 3) and points.unique(dim=0).shape[0] == 10  # every point kept, some repeated
    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(500, 3)))
    points = PointCloudDataset(root=str(tmp_path), num_points=32, resample="fps", augment=False)[(0, 0)]["points"]
    assert points.unique(dim=0).shape[0] == 32


def test_augmentation_is_bounded_and_seeded(tmp_path):
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).normal(size=(300, 3)))
    plain = PointCloudDataset(root=str(tmp_path), num_points=300, augment=False)[(0, 5)]["points"]
    ds = PointCloudDataset(root=str(tmp_path), num_points=300)
    augmented = ds[(0, 5)]["points"]
    assert torch.equal(augmented, ds[(0, 5)]["points"]) and not torch.equal(augmented, ds[(0, 6)]["points"])
    # same subset (300 of 300, same seed) -> augmented = plain * scale + shift, per axis
    order_plain, order_aug = plain[:, 0].argsort(), augmented[:, 0].argsort()
    scale = (augmented[order_aug].std(0) / plain[order_plain].std(0))
    shift = augmented.mean(0) - plain.mean(0) * scale
    assert ((scale > 2 / 3 - 1e-4) & (scale < 1.5 + 1e-4)).all() and (shift.abs() <= 0.2 + 1e-4).all()


def test_class_folders_and_list_files_give_labels(tmp_path):
    for cls in ("chair", "table"):
        (tmp_path / cls).mkdir()
        np.save(tmp_path / cls / "a.npy", np.random.default_rng(1).normal(size=(40, 3)))
    ds = PointCloudDataset(root=str(tmp_path), num_points=16)
    assert [ds[(i, 0)]["label"] for i in range(2)] == [0, 1]
    (tmp_path / "train.txt").write_text("table/a.npy 7\nchair/a.npy 3\n")
    listed = PointCloudDataset(root=str(tmp_path / "train.txt"), num_points=16)
    assert [label for _, label in listed.items] == [7, 3]


@pytest.mark.parametrize("name, content, message", [
    ("empty.xyz", "", "no points"),
    ("empty.off", "# nothing\n", "empty OFF"),
    ("one.xyz", "1 2 3\n", "only 1 point"),
    ("nan.txt", "1,2,3\nnan,0,0\n0,0,1\n", "NaN or infinite"),
    ("same.xyz", "1 1 1\n1 1 1\n", "all points coincide"),
    ("garbage.ply", b"\x00\x01garbage", "not a PLY"),
    ("garbage.off", b"\x89PNG\x00\xff\xfe", "not a text file"),
    ("garbage.xyz", "hello world again\n", "non-numeric"),
    ("garbage.npy", b"not numpy", "unreadable numpy"),
    ("truncated.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),
    ("badface.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n", "refers to vertex 9"),
    ("nested.wrl", "#VRML V2.0 utf8\nTransform { scale 2 2 2 children [ Shape { geometry IndexedFaceSet {\n"
                   "coordIndex [0,1,2,-1] coord Coordinate { point [0 0 0, 1 0 0, 0 1 0] } } } ] }\n",
     "Transform nodes are not supported"),
    ("v1.wrl", "#VRML V1.0 ascii\nSeparator { }\n", "not a VRML 2.0"),
    ("badface.wrl", "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coordIndex [0,1,7,-1]\n"
                    "coord Coordinate { point [0 0 0, 1 0 0, 0 1 0] } } }\n", "refers to vertex 7"),
    ("short.ply", "ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
                  "property float z\nend_header\n\x00\x00", "truncated"),
])
def test_bad_files_raise_errors_naming_them(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RuntimeError, match=rf"{name}.*{message}"):
        PointCloudDataset(root=str(path), num_points=8)[(0, 0)]


def test_bad_files_can_be_skipped_and_counted(tmp_path):
    (tmp_path / "a_bad.xyz").write_text("1 2 3\n")
    np.save(tmp_path / "b_good.npy", np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match=r"a_bad\.xyz: only 1 point"):
        read_point_file(str(tmp_path / "a_bad.xyz"))
    ds = PointCloudDataset(root=str(tmp_path), num_points=8, skip_bad_samples=True)
    with pytest.warns(UserWarning, match=r"a_bad\.xyz"):
        sample = ds[(0, 0)]
    assert sample["n_bad"] == 1 and sample["points"].shape == (8, 3)


@pytest.mark.skipif(not os.path.isdir(SAMPLE_POINTS), reason="sample point data not present")
def test_bundled_sample_meshes_and_lidar_load():
    ds = PointCloudDataset(root=SAMPLE_POINTS, num_points=1024)
    assert len(ds) >= 13
    labels = [ds[(i, i)]["label"] for i in range(len(ds))]
    assert sorted(set(labels)) == list(range(len(os.listdir(SAMPLE_POINTS))))
    lidar = [i for i, (path, _) in enumerate(ds.items) if path.endswith(".ply")]
    vertices, faces = read_point_file(ds.items[lidar[0]][0])
    assert faces is None and vertices.shape[0] > 1000


def test_image_point_sets_follow_the_bright_pixels_and_keep_labels(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    image[1, 6] = 255  # one bright pixel at row 1, column 6
    image[5, 2] = 85   # a dimmer one: a third as many points on average
    rng = np.random.default_rng(0)
    points = image_to_points(image, 3000, depth=0.25, rng=rng)
    assert points.shape == (3000, 3)
    bright = (points[:, 0] >= 6) & (points[:, 0] < 7) & (points[:, 1] >= 6) & (points[:, 1] < 7)  # y up: 8-1-1
    dim = (points[:, 0] >= 2) & (points[:, 0] < 3) & (points[:, 1] >= 2) & (points[:, 1] < 3)
    assert bright.sum() + dim.sum() == 3000 and 0.7 < bright.mean() < 0.8
    assert np.allclose(points[bright, 2], 2.0) and np.allclose(points[dim, 2], 2.0 / 3)
    with pytest.raises(ValueError, match="blank"):
        image_to_points(np.zeros((8, 8)), 10, 0.25, rng)

    sample = os.path.join(ROOT, "data", "sample", "images", "fashion_mnist.npz")
    train = ImagePointSetDataset(sample, num_points=256, augment=False)
    test = ImagePointSetDataset(sample, split="test", num_points=256, augment=False)
    assert (len(train), len(test)) == (4000, 1000)
    item = train[5]
    assert item["points"].shape == (256, 3) and item["label"] == train.items[5][1]
    assert torch.equal(item["points"], train[5]["points"])  # probes see the same cloud every time
    assert float(item["points"].norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
    digits = os.path.join(ROOT, "data", "sample", "images", "digits.npz")  # the CPU recipe's data
    digit_sets = ImagePointSetDataset(digits, split="test", num_points=256, augment=False)
    labels = [label for _, label in digit_sets.items]
    assert len(digit_sets) == 1000 and np.bincount(labels).tolist() == [100] * 10
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="grayscale"):
        ImagePointSetDataset(str(tmp_path / "rgb.npz"))


# ---- adapter and model -----------------------------------------------------------------------------
def clouds(batch=2, n=256, seed=0):
    """Noisy spheres of different radii: [B, n, 3]."""
    gen = torch.Generator().manual_seed(seed)
    points = torch.nn.functional.normalize(torch.randn(batch, n, 3, generator=gen), dim=-1)
    return points * torch.linspace(0.5, 1.0, batch)[:, None, None]


def test_tokens_are_fps_centres_with_their_knn_groups():
    adapter = PointAdapter(num_groups=16, group_size=8, dim=32, pos_dims=(32, 24))
    points = clouds()
    tokens = adapter.tokenize({"points": points})
    assert tokens.patches.shape == (2, 16, 24) and tokens.coords.shape == (2, 16, 3)
    assert tokens.patch_shape == (8, 3) and tokens.grid is None and tokens.valid is None
    centre_ids = farthest_point_sample(points, 16)[..., None].expand(-1, -1, 3)
    assert torch.equal(tokens.coords, torch.gather(points, 1, centre_ids))
    groups = tokens.patches.view(2, 16, 8, 3)
    assert groups[:, :, 0].abs().max() == 0  # each centre is its own nearest neighbour
    member_dist = groups.norm(dim=-1).sort(-1).values  # [B, G, K] distances of the members to their centre
    nearest = (tokens.coords[:, :, None] - points[:, None]).norm(dim=-1).sort(-1).values[..., :8]  # brute force
    assert torch.allclose(member_dist, nearest, atol=1e-6)
    assert torch.equal(adapter.target(tokens), tokens.patches) and adapter.target_dim == 24


def test_embed_pos_and_errors():
    adapter = PointAdapter(num_groups=16, group_size=8, dim=32, pos_dims=(32, 24)).eval()
    tokens = adapter.tokenize({"points": clouds()})
    ids = torch.tensor([[0, 3, 5], [1, 2, 4]])
    patches = torch.gather(tokens.patches, 1, ids[..., None].expand(-1, -1, 24))
    out = adapter.embed(patches, tokens, ids)
    assert out.shape == (2, 3, 32)
    shuffled = patches.view(2, 3, 8, 3)[:, :, torch.randperm(8)].reshape(2, 3, 24)
    assert torch.allclose(adapter.embed(shuffled, tokens, ids), out, atol=1e-5)  # a group is a set
    assert adapter.pos(tokens.coords, 24).shape == (2, 16, 24) and adapter.pos(tokens.coords, 32).shape == (2, 16, 32)
    assert len(adapter.centre_embed) == 2
    with pytest.raises(ValueError, match="width 48.*pos_dims"):
        adapter.pos(tokens.coords, 48)
    with pytest.raises(ValueError, match="fewer than PointAdapter.num_groups"):
        adapter.tokenize({"points": clouds(n=10)})


def test_point_mae_head_reads_max_and_mean_pooled_tokens_and_learns_the_radius(tmp_path):
    """Point-MAE's fine-tune head: max- and mean-pooled tokens [B, 2D] into a 256-256 MLP with
    BatchNorm (here 16-16); a pretraining checkpoint fills the encoder, the head starts fresh."""
    from unimask.models.classifier import Classifier
    from unimask.weights.load import load_pretrained

    torch.manual_seed(0)
    adapter = PointAdapter(num_groups=16, group_size=8, dim=32, pos_dims=(32, 32))
    model = Classifier(adapter, ViTEncoder(dim=32, depth=1, num_heads=2), num_classes=2, pool="max+mean",
                       head_hidden=(16, 16), head_dropout=0.1, layer_decay=None)
    assert [type(m).__name__ for m in model.head] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert model.head[-1].weight.std() < 1e-3 and model.head_dropout.p == 0.0  # dropout inside the MLP only
    points = torch.cat([clouds(8, seed=1) * 0.3, clouds(8, seed=2)])  # radii 0.15-0.3 vs 0.5-1
    batch = {"points": points, "label": torch.tensor([0] * 8 + [1] * 8)}
    latent, valid = encode_all(adapter, model.encoder, batch)
    pooled = model.pooled_features(batch)
    assert pooled.shape == (16, 64)
    assert torch.allclose(pooled[:, :32], latent.amax(1)) and torch.allclose(pooled[:, 32:], latent.mean(1))
    with pytest.raises(ValueError, match="Classifier.pool"):
        Classifier(adapter, ViTEncoder(dim=32, depth=1, num_heads=2), num_classes=2, pool="max")
    with pytest.raises(ValueError, match="Classifier.head_hidden"):
        Classifier(adapter, ViTEncoder(dim=32, depth=1, num_heads=2), num_classes=2, head_hidden=(0,))

    path = str(tmp_path / "pretrained.pt")
    torch.save({"model": tiny_point_model().state_dict()}, path)
    report = load_pretrained(model, path, verbose=False)
    assert not report.missing and {"head.0.weight", "head.1.running_mean", "head.8.weight"} <= set(report.new)
    losses, out = overfit(model, batch, 60, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0] and out.stats["train_top1"] == 100
    # (eval mode needs BatchNorm statistics of hundreds of steps: the mini-PointNet's variance
    # decays from its initial 1 by 0.9 a step towards ~1e-6; fine-tuning runs 1000+ steps)


def tiny_point_model(dim=32):
    adapter = PointAdapter(num_groups=16, group_size=8, dim=dim, pos_dims=(dim, dim))
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.6), ViTEncoder(dim=dim, depth=1, num_heads=2),
                       MAEDecoder(in_dim=dim, dim=dim, depth=1, num_heads=2))


def test_overfitting_one_batch_lowers_chamfer_and_renders(tmp_path):
    torch.manual_seed(0)
    model = tiny_point_model()
    batch = {"points": clouds(4, 256)}
    losses, out = overfit(model, batch, 20, lr=2e-3, seeds=2)
    assert out.pred.shape == (4, 10, 24) and out.mask.masked.sum(1).tolist() == [10] * 4  # hidden groups only
    assert np.mean(losses[-3:]) < 0.25 * np.mean(losses[:3]), losses
    pred = model.full_prediction(out).detach()
    path = model.adapter.render(out.tokens, pred, out.mask, str(tmp_path / "r.png"))
    assert os.path.getsize(path) > 5000


def test_point2vec_recipe_learns_teacher_latents_and_draws_no_reconstruction(tmp_path):
    """gin/point2vec_cpu.gin: the decoder predicts the EMA teacher's latents of the hidden groups;
    the loss falls, and there is no point-cloud figure to draw from latents."""
    from unimask.targets import EMATeacherTarget

    workdir = str(tmp_path / "p2v")
    args = ["--gin", "gin/point2vec_cpu.gin", "--gin", "gin/smoke.gin", "--workdir", workdir]
    assert run_train(args + fast_params("train.steps=20", "train.eval_every=20")) == 0
    rows = read_metrics(workdir)
    assert rows[-1]["step"] == 20 and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert not os.path.exists(os.path.join(workdir, "recon"))
    with pytest.raises(NotImplementedError, match="latents"):
        EMATeacherTarget(latent_dim=8).invert(torch.zeros(1, 2, 8), None, None)


@pytest.mark.skipif(not os.path.isdir(SAMPLE_POINTS), reason="sample point data not present")
@pytest.mark.parametrize("recipe", ["gin/point_mae.gin", "gin/point_mae_cpu.gin"])
def test_recipe_trains_under_smoke(tmp_path, recipe):
    workdir = str(tmp_path / "pm")
    args = ["--gin", recipe, "--gin", "gin/smoke.gin", "--workdir", workdir]
    assert run_train(args + fast_params("train.steps=20", "train.eval_every=20")) == 0
    rows = read_metrics(workdir)
    assert rows[-1]["step"] == 20 and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert os.path.exists(os.path.join(workdir, "recon", "step_20.png"))


def test_stl_ascii_and_binary_read_through_trimesh(tmp_path):
    triangles = SQUARE[np.array(SQUARE_TRIANGLES)]  # [2, 3, 3] corners
    ascii_lines = ["solid quad"]
    for tri in triangles:
        ascii_lines += ["facet normal 0 0 1", " outer loop", *[f"  vertex {x} {y} {z}" for x, y, z in tri],
                        " endloop", "endfacet"]
    (tmp_path / "quad_ascii.stl").write_text("\n".join(ascii_lines + ["endsolid quad"]) + "\n")
    record = np.zeros(len(triangles), np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")]))
    record["corners"] = triangles
    (tmp_path / "quad_binary.stl").write_bytes(b"\x00" * 80 + np.uint32(len(triangles)).tobytes() + record.tobytes())
    for name in ("quad_ascii.stl", "quad_binary.stl"):
        vertices, faces = read_point_file(str(tmp_path / name))
        np.testing.assert_allclose(vertices[faces], triangles, err_msg=name)  # STL repeats corners per facet
    (tmp_path / "bad.stl").write_bytes(b"solid nothing here")
    with pytest.raises(ValueError, match=r"bad\.stl"):
        read_point_file(str(tmp_path / "bad.stl"))
