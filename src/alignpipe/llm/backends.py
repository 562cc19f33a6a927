"""The backend a role section names: the built-in world (``oracle``), a local model (``hf``) or an OpenAI endpoint.

    backend = make_backend(params.roles.teacher, kb)    # what build_roles and a fan-out worker both build
"""

from __future__ import annotations

from typing import Any

from alignpipe.config import ModelSection, RoleSection
from alignpipe.llm.openai_backend import OpenAIBackend
from alignpipe.llm.oracle_backend import OracleBackend
from alignpipe.world.kb import KB


def make_backend(cfg: RoleSection, kb: KB | None = None, role: str | None = None) -> Any:
    """The backend ``cfg`` names (not shared; :func:`alignpipe.llm.build_roles` shares equal ones); ``role`` (the
    first role that uses it) is named in its errors."""
    if cfg.backend == "oracle":
        return OracleBackend(kb)
    if cfg.backend == "hf":
        # Lazy: the hf backend imports torch and transformers, which oracle- and openai-only runs never need.
        from alignpipe.llm.hf_backend import HFBackend

        section = ModelSection(name_or_path=cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        return HFBackend(cfg.model, section, cfg.max_prompt_tokens, key=f"roles.{role}.model" if role else None)
    return OpenAIBackend(cfg.base_url, cfg.model, cfg.api_key_env, cfg.timeout_s, role=role)
