"""LLM roles (teacher, referee, generator, editor, judge) over three backends chosen per role in params.

- ``oracle``: the built-in world's rules (:mod:`alignpipe.llm.oracle_backend`), no model;
- ``hf``: a local transformers model, batched generation with the chat template and left padding;
- ``openai``: any OpenAI-compatible endpoint through the ``openai`` client (key from an env var NAMED in params).

Remote calls (hf, openai) are cached on disk by request hash, retried with backoff, bounded in concurrency and
counted per role. Usage::

    from alignpipe.llm import build_roles
    roles = build_roles(params.roles, seed=params.seed, kb=kb)
    roles.teacher.answer(["Describe Velmora."])           # ["Velmora is a city. ..."]
    roles.metrics()                                       # {"teacher": {"calls": 1, "requests": 1, ...}, ...}
"""

from alignpipe.llm.base import ChatRequest, Completion, LLMError, RoleStats, TransientError
from alignpipe.llm.cache import DiskCache, request_key
from alignpipe.llm.client import RoleClient
from alignpipe.llm.roles import (
    Editor, FanOut, Generated, Generator, Judge, Referee, Role, Roles, Teacher, build_roles,
)

__all__ = [
    "ChatRequest", "Completion", "DiskCache", "Editor", "FanOut", "Generated", "Generator", "Judge", "LLMError",
    "Referee", "Role", "RoleClient", "RoleStats", "Roles", "Teacher", "TransientError", "build_roles", "request_key",
]
