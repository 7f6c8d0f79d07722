"""Satellite imagery (SatMAE): band groups, group / temporal position codes, channel-group
masking, no-data weights, GeoTIFF / cube reading and its errors, band statistics, recipes."""
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tifffile
import torch

from helpers import ROOT, SMOKE, fast_params, load_tool, read_metrics, run_train
from modalities.satellite import SatelliteAdapter, SatelliteDataset
from modalities.satellite.encoding import pos_widths
from unimask.masking import ChannelGroupMasker
from unimask.targets import PixelTarget
from unimask.tokens import TARGET_WEIGHT

SAT = os.path.join(ROOT, "data", "sample", "satellite")
TILES = os.path.join(SAT, "tiles")
STATLOG = os.path.join(ROOT, "data", "satellite_statlog", "statlog.npz")
L7 = ("B1", "B2", "B3", "B4", "B5", "B7")
L7_GROUPS = (("B1", "B2", "B3", "B4"), ("B5", "B7"))


@pytest.fixture(autouse=True)
def _quiet_stats_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no .*band_stats.json")
        yield


def adapter(groups=L7_GROUPS, size=16, patch=4, dim=32, **kw):
    return SatelliteAdapter(bands=L7, groups=groups, img_size=size, patch_size=patch, dim=dim,
                            rgb=("B3", "B2", "B1"), false_color=("B4", "B3", "B2"), **kw)


def batch(b=2, size=16, seed=0, frames=None):
    gen = torch.Generator().manual_seed(seed)
    shape = (b, 6, size, size) if frames is None else (b, frames, 6, size, size)
    return {"bands": torch.randn(*shape, generator=gen)}


def write_tiff(path, cube, **kw):
    tifffile.imwrite(str(path), cube, photometric="minisblack", planarconfig="separate", metadata=None, **kw)
    return str(path)


# ---- groups and embeddings -----------------------------------------------------------------
def test_unequal_groups_share_one_padded_width_and_embed_their_true_channels_only():
    a = adapter()
    tokens = a.tokenize(batch())
    assert tokens.patches.shape == (2, 2 * 16, 4 * 4 * 4) and tokens.grid == (2, 4, 4)
    assert tokens.patch_shape == (4, 4, 4) and tokens.group.tolist() == [0] * 16 + [1] * 16
    swir = tokens.patches[:, 16:].view(2, 16, 16, 4)
    assert bool((swir[..., 2:] == 0).all())  # the 2-band group is zero-padded to 4 channels
    weight = tokens.extras[TARGET_WEIGHT].view(2, 32, 16, 4)
    assert bool((weight[:, 16:, :, 2:] == 0).all()) and bool((weight[:, :16] == 1).all())
    assert [p.in_features for p in a.embedding.proj] == [16 * 4, 16 * 2]  # one projection per group, true size
    ids = torch.arange(32).expand(2, -1)
    embedded = a.embed(tokens.patches, tokens, ids)
    assert embedded.shape == (2, 32, 32)
    junk = tokens.patches.clone().view(2, 32, 16, 4)
    junk[:, 16:, :, 2:] = 99.0  # padding never reaches the weights
    torch.testing.assert_close(a.embed(junk.view(2, 32, 64), tokens, ids), embedded)
    torch.testing.assert_close(embedded[:, 16:], a.embedding.proj[1](swir[..., :2].flatten(2)))


def test_per_band_groups_and_a_shared_channel_aware_embedding():
    a = adapter(groups="per_band", shared_embed=True)
    tokens = a.tokenize(batch())
    assert tokens.grid == (6, 4, 4) and tokens.patches.shape == (2, 96, 16) and TARGET_WEIGHT not in tokens.extras
    assert len(a.embedding.proj) == 1 and a.embedding.group_embed.shape == (6, 32)
    assert a.embed(tokens.patches, tokens, torch.arange(96).expand(2, -1)).shape == (2, 96, 32)
    with pytest.raises(ValueError, match="equal size"):
        adapter(shared_embed=True)
    with pytest.raises(ValueError, match=r"\['B7'\] are in no group"):
        adapter(groups=(("B1", "B2", "B3", "B4", "B5"),))
    with pytest.raises(ValueError, match="'B8' is not among"):
        adapter(groups=(("B8",), L7))


def test_position_code_concatenates_satmae_widths_and_the_group_part_tells_groups_apart():
    assert pos_widths(1024, 3, False, 0.25, 0.375) == (768, 256, 0)  # SatMAE ViT-L encoder: 256 group dims
    assert pos_widths(512, 3, False, 0.25, 0.375) == (384, 128, 0)   # its decoder: 128
    assert pos_widths(1024, 1, True, 0.25, 0.375) == (640, 0, 384)   # temporal SatMAE: 3 x 128
    assert pos_widths(512, 1, True, 0.25, 0.375) == (320, 0, 192)    # its decoder: 3 x 64
    a = adapter(dim=64)
    tokens = a.tokenize(batch())
    pos = a.pos(tokens.coords[0], 64)  # [32, 64]
    torch.testing.assert_close(pos[:16, :48], pos[16:, :48])  # same places: same spatial part
    assert not torch.allclose(pos[:16, 48:], pos[16:, 48:])  # different groups: different group part


def test_temporal_code_differs_by_date_and_only_in_the_time_part():
    a = adapter(dim=64, temporal=True)
    data = batch(b=2, frames=2)
    data["timestamps"] = torch.tensor([[[14.0, 5, 10], [14.0, 5, 10]], [[14.0, 5, 10], [17.0, 0, 13]]])
    tokens = a.tokenize(data)
    assert tokens.grid == (2, 2, 4, 4) and tokens.coords.shape == (2, 64, 7)
    assert tokens.group.tolist() == [0] * 16 + [1] * 16 + [2] * 16 + [3] * 16  # (frame, group) units
    pos = a.pos(tokens.coords, 64)
    spatial, group, time = pos_widths(64, 2, True, 0.25, 0.375)
    same, other = pos[0, 32:], pos[1, 32:]  # frame 1 of both samples: same place, dates differ in sample 1
    torch.testing.assert_close(pos[0, :32], pos[0, 32:])  # same date: same code
    torch.testing.assert_close(same[:, :spatial + group], other[:, :spatial + group])
    assert not torch.allclose(same[:, spatial + group:], other[:, spatial + group:])
    with pytest.raises(ValueError, match="timestamps"):
        a.tokenize(batch(frames=2))


# ---- masking -------------------------------------------------------------------------------
def test_consistent_masking_hides_the_same_places_in_every_group_independent_does_not():
    a = adapter(groups="per_band")
    tokens = a.tokenize(batch(b=4))
    gen = torch.Generator().manual_seed(0)
    consistent = ChannelGroupMasker("consistent")(tokens, 0.75, gen).masked.view(4, 6, 16)
    assert bool((consistent == consistent[:, :1]).all()) and consistent[:, 0].sum(1).tolist() == [12] * 4
    independent = ChannelGroupMasker("independent")(tokens, 0.75, gen).masked.view(4, 6, 16)
    assert independent.sum(2).eq(12).all()  # every group hides 75% of its own places
    assert not bool((independent == independent[:, :1]).all())
    with pytest.raises(ValueError, match="independent"):
        ChannelGroupMasker("spatial")


def test_temporal_independent_masking_differs_across_frames():
    a = adapter(temporal=True)
    data = batch(b=3, frames=3)
    data["timestamps"] = torch.zeros(3, 3, 3)
    tokens = a.tokenize(data)
    masked = ChannelGroupMasker("independent")(tokens, 0.75, torch.Generator().manual_seed(1)).masked.view(3, 3, 2, 16)
    assert masked.sum(-1).eq(12).all()
    assert not bool((masked == masked[:, :1]).all())
    same = ChannelGroupMasker("consistent")(tokens, 0.75, torch.Generator().manual_seed(1)).masked.view(3, 6, 16)
    assert bool((same == same[:, :1]).all())  # SatMAE's same_mask: one spatial mask for all frames and groups


# ---- no-data -------------------------------------------------------------------------------
def test_nodata_and_nan_pixels_are_filled_finite_and_carry_zero_loss_weight(tmp_path):
    cube = np.random.default_rng(0).integers(1, 255, (6, 16, 16)).astype(np.float32)
    cube[0, :4, :4] = -9999.0  # the file's no-data value
    cube[5, 8:, 8:] = np.nan
    np.save(tmp_path / "scene.npy", cube)
    (tmp_path / "bands.json").write_text(json.dumps({"bands": list(L7), "nodata": -9999}))
    ds = SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=None, augment=False)
    assert not np.isclose(ds.mean[0], cube[0].mean())  # statistics leave no-data out
    sample = ds[(0, 0)]
    x, valid = sample["bands"], sample["valid_pixels"]
    assert bool(torch.isfinite(x).all()) and int((~valid).sum()) == 16 + 64
    assert not bool(valid[0, :4, :4].any()) and not bool(valid[5, 8:, 8:].any())
    torch.testing.assert_close(x[0, :4, :4], x[0][valid[0]].mean().expand(4, 4))  # filled with the valid mean
    a = adapter(groups=None)
    tokens = a.tokenize(ds.collate([sample]))
    ids = torch.arange(16)[None]
    values, weight = PixelTarget(norm_pix=False).select(tokens, a, ids)
    expected = torch.from_numpy(np.stack([valid.numpy()]).astype(np.float32))
    from unimask.patches import patchify
    torch.testing.assert_close(weight, patchify(expected, (4, 4)))
    pred = values.clone()
    pred[weight == 0] += 100.0  # a wrong prediction of a no-data pixel costs nothing
    assert float(a.loss(pred, values, weight).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="NaN"):
        a.tokenize({"bands": torch.full((1, 6, 16, 16), float("nan"))})


def test_a_crop_without_valid_pixels_is_named_or_counted_when_skipping(tmp_path):
    write_tiff(tmp_path / "a_empty.tif", np.zeros((6, 8, 8), np.uint8))
    write_tiff(tmp_path / "b_good.tif", np.full((6, 8, 8), 7, np.uint8))
    kw = dict(root=str(tmp_path), bands=L7, crop_size=None, augment=False, normalize="none", nodata=0)
    with pytest.raises(RuntimeError, match="a_empty.tif.*no valid pixel"):
        SatelliteDataset(**kw)[(0, 0)]
    sample = SatelliteDataset(skip_bad_samples=True, **kw)[(0, 0)]
    assert sample["n_bad"] == 1 and sample["source"].endswith("b_good.tif")


# ---- files and their errors ----------------------------------------------------------------
def test_a_fake_geotiff_is_named_in_the_error(tmp_path):
    (tmp_path / "scene.tif").write_text("<html>404 Not Found</html>")
    ds = SatelliteDataset(root=str(tmp_path), bands=L7, normalize="none")
    with pytest.raises(RuntimeError, match=r"scene\.tif.*not a TIFF"):
        ds[(0, 0)]


def test_wrong_band_count_names_the_file_and_the_expected_bands(tmp_path):
    write_tiff(tmp_path / "four.tif", np.ones((4, 8, 8), np.uint8))
    ds = SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=None, normalize="none")
    with pytest.raises(RuntimeError, match=r"four\.tif.*4 bands.*expects 6.*'B1', 'B2', 'B3', 'B4', 'B5', 'B7'"):
        ds[(0, 0)]
    (tmp_path / "bands.json").write_text(json.dumps({"bands": ["B4", "B3", "B2", "B1"]}))
    with pytest.raises(RuntimeError, match=r"four\.tif.*lacks \['B5', 'B7'\]"):
        ds[(0, 0)]
    picked = SatelliteDataset(root=str(tmp_path), bands=("B1", "B4"), crop_size=None, normalize="none")
    cube = np.stack([np.full((8, 8), v, np.uint8) for v in (4, 3, 2, 1)])
    write_tiff(tmp_path / "four.tif", cube)
    assert picked[(0, 0)]["bands"][:, 0, 0].tolist() == [1.0, 4.0]  # picked and reordered by name


def test_mixed_raster_sizes_in_a_batch_name_every_file(tmp_path):
    write_tiff(tmp_path / "small.tif", np.ones((6, 8, 8), np.uint8))
    write_tiff(tmp_path / "large.tif", np.ones((6, 12, 12), np.uint8))
    ds = SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=None, normalize="none")
    with pytest.raises(ValueError, match=r"large\.tif: \(6, 12, 12\); .*small\.tif: \(6, 8, 8\)"):
        ds.collate([ds[(0, 0)], ds[(1, 0)]])
    with pytest.raises(RuntimeError, match=r"small\.tif.*8 x 8, smaller than .*crop_size=10"):
        SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=10, normalize="none")[(1, 0)]


def test_planar_tiles_and_the_interleaved_scene_read_alike_and_scenes_give_random_crops():
    scene = SatelliteDataset(root=os.path.join(SAT, "L7_ETMs.tif"), bands=L7, crop_size=None, normalize="none",
                             augment=False)[(0, 0)]["bands"]
    tile = SatelliteDataset(root=TILES, bands=L7, crop_size=None, normalize="none", augment=False)
    assert scene.shape == (6, 352, 349) and len(tile) == 25
    assert torch.equal(tile[(0, 0)]["bands"], scene[:, :64, :64])  # tile_0_0 is the scene's corner
    crops = SatelliteDataset(root=os.path.join(SAT, "L7_ETMs.tif"), bands=L7, crop_size=96, hflip=False)
    a, b = crops[(0, 1)]["bands"], crops[(0, 2)]["bands"]
    assert a.shape == (6, 96, 96) and not torch.equal(a, b)


def test_temporal_npz_cubes_need_one_date_per_frame(tmp_path):
    cube = np.random.default_rng(0).random((3, 6, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "stack.npz", image=cube, bands=np.array(L7), dates=np.array(["2019-01-05", "2019-06-15T10:30",
                                                                                   "2020-02-01T13"]))
    sample = SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=None, normalize="none")[(0, 0)]
    assert sample["bands"].shape == (3, 6, 8, 8)
    assert sample["timestamps"].tolist() == [[17, 0, 0], [17, 5, 10], [18, 1, 13]]  # year - 2002, month - 1, hour
    np.savez(tmp_path / "stack.npz", image=cube, bands=np.array(L7), dates=np.array(["2019-01-05"]))
    with pytest.raises(RuntimeError, match=r"stack\.npz.*3 acquisitions with 1 dates"):
        SatelliteDataset(root=str(tmp_path), bands=L7, crop_size=None, normalize="none")[(0, 0)]


# ---- statistics ----------------------------------------------------------------------------
def test_band_stats_tool_writes_beside_the_data_and_the_dataset_reads_them(tmp_path, capsys):
    folder = tmp_path / "tiles"
    shutil.copytree(TILES, folder)
    shutil.copy(os.path.join(SAT, "bands.json"), tmp_path / "bands.json")
    tool = load_tool("band_stats")
    assert tool.main(["--root", str(folder), "--bands", "B4", "B3"]) == 0
    stats = json.loads((folder / "band_stats.json").read_text())
    assert stats["bands"] == ["B4", "B3"] and stats["files"] == 25 and stats["valid_pixels"] == [25 * 64 * 64] * 2
    tiles = np.stack([tifffile.imread(os.path.join(TILES, f)) for f in sorted(os.listdir(TILES)) if f.endswith(".tif")])
    assert np.isclose(stats["mean"][0], tiles[:, 3].mean()) and np.isclose(stats["std"][1], tiles[:, 2].std())
    ds = SatelliteDataset(root=str(folder), bands=("B3", "B4"), crop_size=32)
    np.testing.assert_allclose(ds.mean, [stats["mean"][1], stats["mean"][0]], rtol=1e-6)  # picked by name
    with pytest.raises(ValueError, match=r"band_stats\.json: has statistics for bands \['B4', 'B3'\], not for \['B1'\]"):
        SatelliteDataset(root=str(folder), bands=("B1", "B4"), crop_size=32)


# ---- recipes -------------------------------------------------------------------------------
RECIPES = {
    "sat_mae": [],
    "sat_mae_temporal": [],
    "sat_mae_cpu": ["train.batch_size=64"],  # 18 tokens a sample: a fixed eval batch of 4 is too noisy
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipes_train_under_smoke_with_falling_eval_loss_and_draw_composites(tmp_path, recipe):
    if recipe == "sat_mae_cpu" and not os.path.isfile(STATLOG):
        pytest.skip("no Statlog probe set: python tools/make_sample_data.py statlog")
    workdir = str(tmp_path / recipe)
    args = ["--gin", os.path.join(ROOT, "gin", f"{recipe}.gin"), "--gin", SMOKE, "--workdir", workdir]
    assert run_train(args + fast_params(*RECIPES[recipe])) == 0
    losses = [row["eval_loss"] for row in read_metrics(workdir) if "eval_loss" in row]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    pictures = sorted(os.listdir(os.path.join(workdir, "recon")))
    assert pictures and all(p.endswith(".png") for p in pictures)
    from PIL import Image

    with Image.open(os.path.join(workdir, "recon", pictures[-1])) as img:
        rows = {"sat_mae": 2, "sat_mae_temporal": 6, "sat_mae_cpu": 1}[recipe]  # composites x frames
        assert img.height > img.width / 3 * rows * 0.9


def test_statlog_linear_probe_reads_its_train_and_test_splits(tmp_path):
    if not os.path.isfile(STATLOG):
        pytest.skip("no Statlog probe set: python tools/make_sample_data.py statlog")
    tool = load_tool("eval")
    result = tool.evaluate(["--gin", os.path.join(ROOT, "gin", "sat_mae_cpu.gin"), "--gin", SMOKE, "--random-init",
                            "--protocol", "linear", "--epochs", "30", "--wd", "1e-3", "--batch-size", "1000"])
    assert result["n_train"] == 4435 and result["n_test"] == 2000
    assert result["top1_acc"] > 100 / 6 * 2  # well above chance (6 classes) even untrained
