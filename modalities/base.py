"""ModalityAdapter's former home, kept as an import path for adapters written outside this
repository (`from modalities.base import ModalityAdapter`). Its home is unimask/interfaces.py, beside
the encoder and decoder contracts, so the core declares what it calls without importing modalities;
code in this repository imports it from there."""
from unimask.interfaces import ModalityAdapter  # noqa: F401
