"""Import every module that defines gin configurables, so a saved gin config (a checkpoint's)
can be parsed: the core's, then the adapters' (which register themselves on import)."""
from __future__ import annotations


def register_all():
    import unimask.classifier  # noqa: F401
    import unimask.cross_decoder  # noqa: F401
    import unimask.decoders  # noqa: F401
    import unimask.encoders  # noqa: F401
    import unimask.losses  # noqa: F401
    import unimask.masking  # noqa: F401
    import unimask.model  # noqa: F401
    import unimask.multimodal  # noqa: F401
    import unimask.objectives  # noqa: F401
    import unimask.siamese  # noqa: F401
    import unimask.targets  # noqa: F401
    import unimask.train.trainer  # noqa: F401
    import unimask.vq  # noqa: F401

    try:  # the adapters live beside the core, in the modalities package
        import modalities  # noqa: F401
    except ImportError:
        pass
