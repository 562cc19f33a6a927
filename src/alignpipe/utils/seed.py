"""One seed drives every random choice: Python, NumPy and torch, with deterministic kernels.

NumPy and torch are imported where they are used: the world, the LLM roles and the flows' parameter check import
this module and need neither.
"""

from __future__ import annotations

import hashlib
import os
import random


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every RNG the pipeline uses and ask torch for deterministic algorithms."""
    import numpy as np
    import torch

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def derive_seed(seed: int, *names: str | int) -> int:
    """A stable sub-seed for a named random choice (independent streams that do not shift each other)."""
    h = hashlib.sha256(("/".join(map(str, (seed, *names)))).encode()).digest()
    return int.from_bytes(h[:4], "little")


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op CPU threads (results can differ in the last digits with the thread count)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
