"""Generation by iterative unmasking over any grid of discrete tokens (text ids, image or audio
codes): start from every place hidden, predict them all, keep the most confident (or a random
share), repeat. One sampler for every discrete modality; a modality supplies `predict`."""
from unimask.generation.sampler import (ORDERS, SCHEDULES, all_hidden_as_mask, draw, hidden_share,  # noqa: F401
                                       iterative_unmask)
