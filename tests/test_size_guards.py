"""Decompression bombs (issue 45, defect 9): every decoder checks the size a file DECLARES before
allocating, and fails within seconds naming the file and the gin binding that raises the limit.

The bomb files are crafted here: archives whose .npy headers declare gigabytes over a few bytes of
data, a PNG whose header declares 10k x 10k pixels, a PLY header declaring a billion vertices, a
deflated .npz / TIFF / .pt of zeros; the crafted 6.9 GB .npz is read in a subprocess whose address
space is capped below what decoding it would need, so a missing guard fails as a MemoryError.
"""
import io
import os
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from modalities.audio import AudioDataset
from modalities.graph import GraphDataset
from modalities.image import ImageDataset
from modalities.limits import SizeLimitError
from modalities.points import PointCloudDataset
from modalities.satellite import SatelliteDataset
from modalities.video import VideoDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")
BOMB_POINTS = (575_000_000, 3)  # float32: 6.9 GB


def npz_declaring(path, members: dict):
    """An .npz whose members' .npy headers declare {name: (shape, dtype)} over 16 bytes of data."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (shape, dtype) in members.items():
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                          "fortran_order": False, "shape": tuple(shape)})
            archive.writestr(f"{name}.npy", buffer.getvalue() + bytes(16))
    return str(path)


def png_declaring(path, width: int, height: int):
    """A 1x1 grey PNG whose IHDR is rewritten to declare width x height (CRC fixed)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    with open(path, "wb") as f:
        f.write(bytes(data))
    return str(path)


def refused(call, *names, seconds=10.0):
    """call() must raise within `seconds`, its message naming every one of `names`."""
    start = time.perf_counter()
    with pytest.raises(Exception) as info:
        call()
    assert time.perf_counter() - start < seconds
    for name in names:
        assert str(name) in str(info.value), (name, str(info.value))
    return info.value


def test_npz_declaring_gigabytes_is_refused_without_allocating(tmp_path):
    """The 6.9 GB points .npz: read under an address-space cap of +1.5 GB after the imports, so
    only a header check passes; the error names the file, the member and the binding."""
    bomb = npz_declaring(tmp_path / "cloud.npz", {"points": (BOMB_POINTS, np.float32)})
    script = textwrap.dedent(f"""
        import resource, sys
        from modalities.points import PointCloudDataset
        ds = PointCloudDataset(root={str(tmp_path)!r})
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 1_500_000_000, resource.RLIM_INFINITY))
        try:
            ds[0]
        except MemoryError:
            sys.exit("MemoryError: the declared size was allocated")
        except RuntimeError as err:
            print(err)
            sys.exit(0)
        sys.exit("no error")
    """)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert time.perf_counter() - start < 60
    for name in (bomb, "'points'", "575,000,000", "PointCloudDataset.max_points=10000000"):
        assert name in run.stdout, (name, run.stdout)


def test_deflated_npz_of_zeros_is_refused_from_its_header(tmp_path):
    """A real deflated archive (40 MB of zeros in ~40 kB) over a lowered limit; and a skip when asked."""
    np.savez_compressed(tmp_path / "zeros.npz", points=np.zeros((3_400_000, 3), np.float32))
    assert os.path.getsize(tmp_path / "zeros.npz") < 200_000
    np.save(tmp_path / "good.npy", np.random.rand(100, 3))
    ds = PointCloudDataset(root=str(tmp_path), max_points=1_000_000, num_points=16)
    bad = [i for i, (path, _) in enumerate(ds.items) if path.endswith("zeros.npz")][0]
    refused(lambda: ds[bad], "zeros.npz", "3,400,000", "PointCloudDataset.max_points=1000000")
    skipping = PointCloudDataset(root=str(tmp_path), max_points=1_000_000, num_points=16, skip_bad_samples=True)
    with pytest.warns(UserWarning, match="PointCloudDataset.max_points"):
        sample = skipping[bad]
    assert sample["n_bad"] == 1 and sample["points"].shape == (16, 3)


def test_npy_with_many_columns_is_no_small_cloud(tmp_path):
    """The header alone: a [10, 1e9] float64 .npy of 16 bytes of data."""
    with open(tmp_path / "wide.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10, 10**9)})
        f.write(bytes(16))
    ds = PointCloudDataset(root=str(tmp_path))
    refused(lambda: ds[0], "wide.npy", "PointCloudDataset.max_points")


def test_ply_header_declaring_a_billion_vertices(tmp_path):
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 1000000000\nproperty float x\n"
              "property float y\nproperty float z\nend_header\n")
    (tmp_path / "bomb.ply").write_bytes(header.encode() + bytes(36))
    ds = PointCloudDataset(root=str(tmp_path))
    refused(lambda: ds[0], "bomb.ply", "'vertex'", "1,000,000,000", "PointCloudDataset.max_points=10000000")


@pytest.mark.parametrize("side", [10_000, 60_000])  # between 1x and 2x Pillow's limit, and past 2x
def test_png_declaring_huge_dimensions(tmp_path, side):
    bomb = png_declaring(tmp_path / "bomb.png", side, side)
    ds = ImageDataset(root=str(tmp_path), img_size=16)
    refused(lambda: ds[0], bomb, f"{side} x {side}", "ImageDataset.max_pixels=67108864")
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's own setting is left as it was


def test_image_max_pixels_is_a_binding_both_ways(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    refused(lambda: ImageDataset(root=str(tmp_path), img_size=16, max_pixels=1000)[0], "a.png", "64 x 64",
            "ImageDataset.max_pixels=1000")
    assert ImageDataset(root=str(tmp_path), img_size=16, max_pixels=4096)[0]["image"].shape == (3, 16, 16)


def test_image_and_satellite_collections_check_their_arrays(tmp_path):
    images = npz_declaring(tmp_path / "images.npz", {"x_train": ((2_000_000, 64, 64, 3), np.uint8),
                                                     "y_train": ((2_000_000,), np.int64)})
    refused(lambda: ImageDataset(root=images), "images.npz", "'x_train'", "ImageDataset.max_array_bytes=4294967296")
    wide = npz_declaring(tmp_path / "wide.npz", {"x_train": ((2, 20_000, 20_000, 3), np.uint8)})
    refused(lambda: ImageDataset(root=wide), "wide.npz", "each image", "ImageDataset.max_pixels")
    cubes = npz_declaring(tmp_path / "cubes.npz", {"x_train": ((10, 13, 20_000, 20_000), np.uint16)})
    refused(lambda: SatelliteDataset(root=cubes, bands=None, normalize="none"), "cubes.npz", "each sample",
            "SatelliteDataset.max_elements=500000000")


def test_satellite_cube_and_deflated_tiff(tmp_path):
    import tifffile

    npz_declaring(tmp_path / "cube.npz", {"image": ((13, 100_000, 100_000), np.uint16)})
    ds = SatelliteDataset(root=str(tmp_path), bands=None, crop_size=None, normalize="none")
    refused(lambda: ds[0], "cube.npz", "'image'", "SatelliteDataset.max_elements=500000000")
    os.remove(tmp_path / "cube.npz")
    tifffile.imwrite(tmp_path / "zeros.tif", np.ones((4, 2000, 2000), np.uint16), compression="zlib",
                     photometric="minisblack", planarconfig="separate")
    assert os.path.getsize(tmp_path / "zeros.tif") < 500_000
    ds = SatelliteDataset(root=str(tmp_path), bands=None, crop_size=None, normalize="none", max_elements=1_000_000)
    refused(lambda: ds[0], "zeros.tif", "TIFF series", "16,000,000", "SatelliteDataset.max_elements=1000000")


def test_audio_duration_and_samples(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "tone.flac", (np.sin(np.arange(32000) / 5) * 0.5).astype(np.float32), 16000)
    refused(lambda: AudioDataset(root=str(tmp_path), max_seconds=1.5)[0], "tone.flac", "2.0 seconds",
            "AudioDataset.max_seconds=1.5")
    refused(lambda: AudioDataset(root=str(tmp_path), max_samples=1000)[0], "tone.flac", "32,000",
            "AudioDataset.max_samples=1000")
    assert AudioDataset(root=str(tmp_path), max_seconds=2.5, target_length=64)[0]["fbank"].shape[1] == 64


def test_audio_decoded_by_pyav_stops_at_the_limit(tmp_path):
    """An AAC track in an .mp4 (soundfile cannot read it: PyAV decodes it)."""
    from modalities.audio.decode import read_pyav
    from modalities.limits import Limit

    clip = os.path.join(SAMPLE, "audiovisual", "train", "clip_00.mp4")
    refused(lambda: read_pyav(clip, Limit(2.0, "AudioDataset.max_seconds")), clip, "AudioDataset.max_seconds=2.0")
    refused(lambda: read_pyav(clip, Limit(None, "x"), Limit(10_000, "AudioDataset.max_samples")), clip,
            "AudioDataset.max_samples=10000")


def test_video_frame_size_and_count_from_the_header(tmp_path):
    csv = os.path.join(SAMPLE, "video", "train.csv")
    refused(lambda: VideoDataset(root=csv, num_frames=4, img_size=32, max_pixels=1000)[0], "VideoDataset.max_pixels=1000",
            "frame size")
    refused(lambda: VideoDataset(root=csv, num_frames=4, img_size=32, max_frames=10)[0], "VideoDataset.max_frames=10",
            "frames")


def test_graph_counts_and_deflated_pt(tmp_path):
    from torch_geometric.data import Data

    torch.save(Data(edge_index=torch.tensor([[0], [1]]), num_nodes=10**12), tmp_path / "nodes.pt")
    refused(lambda: GraphDataset(str(tmp_path / "nodes.pt"), features="identity"), "nodes.pt",
            "1,000,000,000,000 nodes", "GraphDataset.max_nodes=50000000")
    torch.save(Data(edge_index=torch.zeros(2, 5000, dtype=torch.long), num_nodes=1), tmp_path / "edges.pt")
    refused(lambda: GraphDataset(str(tmp_path / "edges.pt"), max_edges=1000), "edges.pt", "5,000 edges",
            "GraphDataset.max_edges=1000")
    torch.save({"edge_index": torch.zeros(2, 4_000_000, dtype=torch.long)}, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert os.path.getsize(tmp_path / "deflated.pt") < 1_000_000
    refused(lambda: GraphDataset(str(tmp_path / "deflated.pt"), max_tensor_bytes=10_000_000), "deflated.pt",
            "GraphDataset.max_tensor_bytes=10000000")


def test_size_limit_error_is_a_value_error_naming_file_and_binding():
    from modalities.limits import Limit

    with pytest.raises(SizeLimitError, match=r"^f\.npz: the array declares 11 points, over A\.b=10; raise it"):
        Limit(10, "A.b").check("f.npz", "the array", 11, "points")
    Limit(None, "A.b").check("f.npz", "the array", 10**15, "points")  # None: no limit
    assert issubclass(SizeLimitError, ValueError)


def test_bundled_sample_data_loads_under_the_default_limits():
    images = os.path.join(SAMPLE, "images")
    assert ImageDataset(root=os.path.join(images, "digits.npz"), img_size=16, in_chans=1)[0]["image"].shape[0] == 1
    assert ImageDataset(root=os.path.join(images, "folder"), img_size=16)[0]["image"].shape == (3, 16, 16)
    points = PointCloudDataset(root=os.path.join(SAMPLE, "points"), num_points=32, mesh_samples=64)
    for i in range(len(points)):
        assert points[i]["points"].shape == (32, 3)
    satellite = SatelliteDataset(root=os.path.join(SAMPLE, "satellite", "tiles"), bands=None, crop_size=32,
                                 normalize="none")
    assert satellite[0]["bands"].ndim == 3
    scene = SatelliteDataset(root=os.path.join(SAMPLE, "satellite", "L7_ETMs.tif"), bands=None, normalize="none")
    assert scene[0]["bands"].ndim == 3
    for folder in ("sounds", "formats"):
        sounds = AudioDataset(root=os.path.join(SAMPLE, "audio", folder), target_length=64, clip_seconds=0.64)
        for i in range(len(sounds)):
            assert sounds[i]["fbank"].shape == (1, 64, 128)
    video = VideoDataset(root=os.path.join(SAMPLE, "video", "train.csv"), num_frames=4, img_size=32)
    assert video[0]["video"].shape == (3, 4, 32, 32)
    from modalities.audiovisual import AudioVisualDataset

    av_clip = AudioVisualDataset(root=os.path.join(SAMPLE, "audiovisual"), num_frames=4, img_size=32,
                                 target_length=64, num_mel_bins=32)
    assert av_clip[0]["video"].shape == (3, 4, 32, 32)
    assert GraphDataset(os.path.join(SAMPLE, "graphs", "karate")).records[0]["num_nodes"] == 34
    assert len(GraphDataset(os.path.join(SAMPLE, "graphs", "mice"))) > 1


# issue 45 follow-up (red team): holes in the guards above


def test_npz_of_a_huge_string_dtype_is_refused_before_loading(tmp_path):
    """(100, 3) of |S4000000 is 300 values but 1.2 GB: the element count passes, the dtype does not."""
    bomb = npz_declaring(tmp_path / "cloud.npz", {"points": ((100, 3), "|S4000000")})
    refused(lambda: PointCloudDataset(root=str(tmp_path))[0], bomb, "'points'", "non-numeric")
    structured = npz_declaring(tmp_path / "cube.npz", {"image": ((2, 4, 4), [("a", "<f8", (1000, 1000))])})
    from modalities.satellite.files import read_npz_cube
    refused(lambda: read_npz_cube(structured), structured, "'image'", "non-numeric")


def test_npy_bytes_are_checked_where_elements_were(tmp_path):
    """complex128 within the element count but over max_elements x 8 bytes: the binding is named."""
    from modalities.limits import Limit
    from modalities.satellite.files import read_npy
    path = str(tmp_path / "cube.npy")
    np.save(path, np.zeros((1, 10, 10), np.complex128))
    refused(lambda: read_npy(path, Limit(100, "SatelliteDataset.max_elements")), path,
            "SatelliteDataset.max_elements=100", "bytes")
    assert read_npy(path, Limit(200, "SatelliteDataset.max_elements")).data.shape == (1, 10, 10)


@pytest.mark.parametrize("element", ["element vertex +1000000000\n", "element vertex 1_000_000_000\n",
                                     "element" + " " * 5000 + "vertex 1000000000\n",
                                     "comment x\n" * 10_001 + "element vertex 1000000000\n",
                                     "element vertex 10\nelement vertex 999999995\n"])
def test_ply_header_counts_are_read_as_plyfile_reads_them(tmp_path, element):
    path = tmp_path / "cloud.ply"
    path.write_text("ply\nformat ascii 1.0\n" + element + "property float x\nproperty float y\nproperty float z\n"
                    "end_header\n0 0 0\n")
    refused(lambda: PointCloudDataset(root=str(tmp_path))[0], path, "PointCloudDataset.max_points")


def test_ply_header_that_does_not_end_is_refused(tmp_path):
    from modalities.points.files import MAX_PLY_HEADER_BYTES, read_point_file
    path = tmp_path / "open.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n")
    refused(lambda: read_point_file(str(path)), path, "does not end")
    long = tmp_path / "long.ply"
    long.write_bytes(b"ply\nformat ascii 1.0\ncomment " + b"x" * MAX_PLY_HEADER_BYTES + b"\nend_header\n")
    refused(lambda: read_point_file(str(long)), long, "does not end within")


def test_video_frames_larger_than_the_header_are_refused_before_conversion(tmp_path):
    """An MJPEG .avi whose header (and first frame) say 64 x 64, later frames 400 x 400: the PyAV
    backend checks each decoded frame against max_pixels."""
    import av
    from fractions import Fraction
    from modalities.limits import Limit
    from modalities.video_decode import VideoReader

    def jpeg(size):
        buffer = io.BytesIO()
        Image.new("RGB", (size, size), (90, 120, 200)).save(buffer, "JPEG")
        return buffer.getvalue()
    path = str(tmp_path / "grow.avi")
    small, big = jpeg(64), jpeg(400)
    with av.open(path, "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for i in range(6):
            packet = av.Packet(small if i == 0 else big)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 25)
            out.mux(packet)
    limit = Limit(100 * 100, "VideoDataset.max_pixels")
    reader = VideoReader(path, backend="av", max_pixels=limit)  # the header passes
    refused(lambda: reader.get(np.arange(0, 6, 2)), path, "VideoDataset.max_pixels=10000", "400 x 400")
    reader.index.pts = None  # the decode-from-start path checks too
    refused(lambda: reader.get(np.arange(0, 6, 2)), path, "VideoDataset.max_pixels=10000", "400 x 400")
