"""unimask: one masked-modeling pipeline (tokenize, mask, encode, decode, loss) for every modality."""
from unimask.tokens import Mask, Tokens, gather_tokens

__all__ = ["Mask", "Tokens", "gather_tokens"]
