"""One trainer for every modality: devices, precision, checkpoints, logging, distributed."""
