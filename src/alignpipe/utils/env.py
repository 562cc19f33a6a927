"""The project's offline, quiet defaults for the libraries it drives (the environment can override each)."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "WANDB_DISABLED": "true",
}


def apply_offline_env() -> None:
    """Set every default in :data:`OFFLINE_ENV` that the environment does not already set."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
