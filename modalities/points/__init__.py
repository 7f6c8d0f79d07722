"""Point clouds (Point-MAE): mesh and cloud files -> FPS centres + kNN groups -> tokens.

A cloud of N points becomes G tokens: G centres picked by farthest point sampling, each
with its K nearest points expressed relative to the centre. The core sees patches
[B, G, K*3], coords = the xyz centres [B, G, 3] and patch_shape (K, 3); the mini-PointNet
embedding, the centre MLP position code and the Chamfer target stay here.
"""
from modalities.points.adapter import MiniPointNet, PointAdapter  # noqa: F401
from modalities.points.clouds import (image_to_points, normalize_unit_sphere, resample, sample_surface,  # noqa: F401
                                      scale_and_translate)
from modalities.points.datasets import ImagePointSetDataset, PointCloudDataset  # noqa: F401
from modalities.points.files import POINT_EXTS, check_cloud, read_geometry, read_point_file  # noqa: F401
from modalities.points.sampling import farthest_point_sample, group_points, knn_indices  # noqa: F401
