"""Generation by iterative unmasking over any grid of discrete tokens (text ids, image or audio
codes): start from every place hidden, predict them all, keep the most confident (or a random
share), repeat. One sampler for every discrete modality; a modality supplies `predict`."""
from unimask.generation.sampler import ORDERS, SCHEDULES, draw, hidden_share, iterative_unmask  # noqa: F401
