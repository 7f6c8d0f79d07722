"""Weights in: published checkpoints (timm, MAE, VideoMAE, Hugging Face) and unimask runs as the
start of a run (`train.init_from`), with a report of what was loaded (load.py, layouts.py)."""
from unimask.weights.load import LoadReport, WeightsError, load_pretrained  # noqa: F401
