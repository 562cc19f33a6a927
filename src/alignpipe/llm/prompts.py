"""Versioned prompt templates, one file each: ``prompts/<name>.v<N>.txt``.

A file holds ``# comment`` lines (where the wording comes from), then ``<<<system>>>`` and/or ``<<<user>>>``
sections; ``{field}`` slots are filled with :meth:`str.format_map` (braces inside the VALUES are safe). A
changed wording gets a new version file, so cached answers to the old wording are never reused for the new.

    messages = render("webr_persona.v1", {"web": page})   # [{"role": "system", ...}, {"role": "user", ...}]
"""

from __future__ import annotations

import functools
import re
import string
from importlib import resources
from typing import Any

from alignpipe.llm.base import Message

_SECTION = re.compile(r"^<<<(system|user)>>>\n", re.MULTILINE)


@functools.cache
def load(template: str) -> tuple[tuple[str, str], ...]:
    """The (role, text) sections of a template; ValueError naming the file when it is missing or malformed."""
    if not re.fullmatch(r"[a-z_]+\.v\d+", template):
        raise ValueError(f"prompt template '{template}': expected '<name>.v<version>', e.g. 'teacher_answer.v1'")
    try:
        raw = resources.files("alignpipe.llm").joinpath("prompts", f"{template}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"prompt template '{template}' not found in alignpipe/llm/prompts/") from None
    body = "\n".join(line for line in raw.splitlines() if not line.startswith("# ")) + "\n"
    parts = _SECTION.split(body)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError(f"prompt template '{template}': must be sections starting with <<<system>>> or <<<user>>>")
    return tuple((parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2))


def fields_of(template: str) -> set[str]:
    """The ``{field}`` names a template uses."""
    return {f for _, text in load(template) for _, f, _, _ in string.Formatter().parse(text) if f}


def render(template: str, fields: dict[str, Any]) -> list[Message]:
    """Chat messages of the template with ``fields`` filled in."""
    missing = fields_of(template) - set(fields)
    if missing:
        raise ValueError(f"prompt template '{template}' needs fields {sorted(missing)}")
    return [{"role": role, "content": text.format_map(fields)} for role, text in load(template)]
