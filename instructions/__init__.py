"""One micro-kernel per instruction: its encoding (a frozen dataclass of task args), its
declared memory footprint and its NumPy twin. Importing the package registers them all."""

from instructions import argmax, attention, attn_o, gemv, token, unfused  # noqa: F401
from instructions.base import REGISTRY, decode

__all__ = ["REGISTRY", "decode"]
