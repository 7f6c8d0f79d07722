"""Generation by iterative unmasking over any set of discrete tokens (vocabulary ids, a VQ
tokenizer's codes): start from every place hidden, predict them all, keep the most confident (or
a random share), repeat. One sampler for every discrete modality; an adapter supplies `predict`."""
from unimask.generation.sampler import (ORDERS, SCHEDULES, all_hidden_as_mask, draw, hidden_share,  # noqa: F401
                                       iterative_unmask)
