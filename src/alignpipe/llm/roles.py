"""The five roles of the papers over any backend, and :func:`build_roles` that makes them from params.

    roles = build_roles(params.roles, seed=params.seed, kb=kb)          # kb: the world's, or None
    answers = roles.teacher.answer(["Describe Velmora."], records=[rec])  # list[str | None]
    scores = roles.referee.compare_swapped(instructions, teacher_answers, student_answers, records)
    new = roles.generator.new_instructions(instructions, hard=True, records=records)  # list[Generated | None]
    edited = roles.editor.edit(instructions, losing, winning, records)
    judged = roles.judge.score(instructions, responses, records)     # list[{"fluency", ...} | None]
    verdicts = roles.judge.check(instructions, responses, constraints, records)  # list[list[bool] | None]
    texts = roles.generator.chat("webr_persona.v1", [{"web": page}])    # any template, free text
    roles.work_metrics()                                               # per-role calls/unparseable for metrics.json
    roles.metrics()                                                    # every counter (requests, cache hits, ...)

Every method takes parallel lists and returns one item per input, ``None`` where the output was unparseable
(counted in ``unparseable``, never raised). ``records`` (the world's instruction records) are optional: LLM
backends read only the rendered prompt, the oracle needs them for the world's verifiers. Each request's seed
is derived from the role seed, the template and the rendered prompt (plus an optional ``key``, e.g. a sample
index), so the same request always carries the same seed and a rerun hits the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.config import ROLE_NAMES, RoleSection, RolesSection
from alignpipe.llm import parse
from alignpipe.llm.backends import make_backend
from alignpipe.llm.base import ChatRequest, Completion, LLMError
from alignpipe.llm.cache import DiskCache
from alignpipe.llm.client import RoleClient
from alignpipe.llm.fanout import call_spec
from alignpipe.llm.prompts import render
from alignpipe.utils.seed import derive_seed
from alignpipe.world.kb import KB

# A flow's task-runner hook (``flows._common.fan_out``): ``fan_out(call_spec) -> mapper``; the mapper takes a role's
# uncached requests and yields ``(index, (completion, counts, error))`` as they arrive (:mod:`alignpipe.llm.fanout`).
FanOut = Callable[[dict[str, Any]], Any]

ROLE_DEFAULTS = {  # (temperature, max_tokens) when params leave them null
    "teacher": (0.7, 512), "referee": (0.2, 512), "generator": (1.0, 256), "editor": (0.7, 512), "judge": (0.0, 128),
}


@dataclass(frozen=True)
class Generated:
    """A new instruction; ``record`` is the world record behind it when the oracle generated it."""

    instruction: str
    record: dict[str, Any] | None = None


class Role:
    """One role: renders templates, calls its client, parses, counts unusable output (and stops on too much).

    ``max_unusable``: the share of this role's outputs that may be unusable (unparseable, empty or a refusal)
    before :meth:`count_unusable` fails the stage (``roles.max_unusable_fraction``; 1 = never).
    """

    def __init__(self, name: str, client: RoleClient, temperature: float, max_tokens: int, seed: int,
                 max_unusable: float = 1.0):
        self.name, self.client = name, client
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.max_unusable = max_unusable
        self._seen = 0  # outputs counted so far (the share's denominator)
        self._example: str | None = None  # the first unusable output, for the error message
        self._lock = threading.Lock()

    @property
    def stats(self):
        return self.client.stats

    def request(self, template: str, fields: dict[str, Any], key: Any = None, temperature: float | None = None,
                max_tokens: int | None = None) -> ChatRequest:
        messages = render(template, fields)
        digest = hashlib.sha256(json.dumps([messages, key], sort_keys=True).encode()).hexdigest()[:16]
        return ChatRequest(template, fields, messages,
                           max_tokens=self.max_tokens if max_tokens is None else max_tokens,
                           temperature=self.temperature if temperature is None else temperature,
                           seed=derive_seed(self.seed, self.name, template, digest))

    def complete(self, template: str, fields: Sequence[dict[str, Any]], keys: Sequence[Any] | None = None,
                 **overrides: Any) -> list[Completion]:
        """Raw completions of ``template`` filled with each ``fields`` (overrides: temperature, max_tokens)."""
        keys = list(keys) if keys is not None else [None] * len(fields)
        return self.client.complete([self.request(template, f, k, **overrides) for f, k in zip(fields, keys)])

    def parsed(self, completions: list[Completion], parser: Callable[[str], Any]) -> list[Any]:
        out = [parser(c.text) for c in completions]
        self.count_unusable(out, [c.text for c in completions])
        return out

    def count_unusable(self, parsed: Sequence[Any], raw: Sequence[str]) -> None:
        """Count ``parsed`` outputs (None: unparseable; text opening with an apology: a refusal), ``raw`` their text.

        Unusable outputs are skipped by the callers, never raised on one by one; but when more than
        ``max_unusable`` of all this role's outputs so far are unusable, the backend, model or prompt is wrong
        for the role, and going on would only write a table of nothing.

        Raises:
            LLMError: naming the role, its backend, the count, the limit and one unusable output (truncated).
        """
        bad = [r for p, r in zip(parsed, raw, strict=True) if p is None]
        refused = [r for p, r in zip(parsed, raw, strict=True) if isinstance(p, str) and parse.is_refusal(p)]
        self.stats.add(unparseable=len(bad), refusals=len(refused))
        with self._lock:
            self._seen += len(parsed)
            if self._example is None and (bad or refused):
                self._example = (bad or refused)[0]
            seen, example = self._seen, self._example
        unusable = self.stats.unparseable + self.stats.refusals
        if seen and unusable / seen > self.max_unusable:
            shown = example if len(example) <= 120 else example[:120] + "..."
            raise LLMError(
                f"role '{self.name}' ({self.client.backend.describe()}): {unusable} of {seen} outputs unusable "
                f"({self.stats.unparseable} unparseable or empty, {self.stats.refusals} refusals), over "
                f"roles.max_unusable_fraction = {self.max_unusable:g}; e.g. {shown!r}. Check the role's backend, "
                "model and prompt (or raise roles.max_unusable_fraction)"
            )

    def chat(self, template: str, fields: Sequence[dict[str, Any]], keys: Sequence[Any] | None = None,
             **overrides: Any) -> list[str | None]:
        """Free-text answers to any template (None: empty output)."""
        return self.parsed(self.complete(template, fields, keys, **overrides), parse.text)


def _recs(records: Sequence[dict | None] | None, n: int) -> list[dict | None]:
    if records is not None and len(records) != n:
        raise ValueError(f"got {len(records)} records for {n} items")
    return list(records) if records is not None else [None] * n


class Teacher(Role):
    def answer(self, instructions: Sequence[str], records: Sequence[dict | None] | None = None,
               keys: Sequence[Any] | None = None) -> list[str | None]:
        """The teacher's response to each instruction (``keys`` tell repeated samples of one prompt apart)."""
        fields = [{"instruction": t, "record": r} for t, r in zip(instructions, _recs(records, len(instructions)))]
        return self.chat("teacher_answer.v1", fields, keys)


class Referee(Role):
    def compare(self, instructions: Sequence[str], answers_1: Sequence[str], answers_2: Sequence[str],
                records: Sequence[dict | None] | None = None) -> list[tuple[float, float] | None]:
        """(score of answer 1, score of answer 2), each 1-10, as presented in this order."""
        fields = [{"instruction": t, "answer_1": a, "answer_2": b, "record": r}
                  for t, a, b, r in zip(instructions, answers_1, answers_2, _recs(records, len(instructions)))]
        return self.parsed(self.complete("referee_compare.v1", fields), parse.referee_scores)

    def compare_swapped(self, instructions: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                        records: Sequence[dict | None] | None = None) -> list[tuple[float, float] | None]:
        """Lion's referee: both orders scored, each answer's two scores averaged; None if either is unparseable."""
        ab = self.compare(instructions, answers_a, answers_b, records)
        ba = self.compare(instructions, answers_b, answers_a, records)
        return [None if x is None or y is None else ((x[0] + y[1]) / 2, (x[1] + y[0]) / 2) for x, y in zip(ab, ba)]


class Generator(Role):
    def new_instructions(self, instructions: Sequence[str], hard: bool,
                         records: Sequence[dict | None] | None = None,
                         keys: Sequence[Any] | None = None) -> list[Generated | None]:
        """One new instruction per seed instruction: same domain and task type (hard) or rarer (easy)."""
        template = "generator_hard.v1" if hard else "generator_easy.v1"
        fields = [{"instruction": t, "record": r} for t, r in zip(instructions, _recs(records, len(instructions)))]
        comps = self.complete(template, fields, keys)
        texts = self.parsed(comps, parse.instruction)
        return [None if t is None else Generated(t, (c.data or {}).get("record")) for t, c in zip(texts, comps)]


class Editor(Role):
    def edit(self, instructions: Sequence[str], losing: Sequence[str], winning: Sequence[str],
             records: Sequence[dict | None] | None = None) -> list[str | None]:
        """A minimal edit of each losing response toward the winning one."""
        fields = [{"instruction": t, "losing": lo, "winning": w, "record": r}
                  for t, lo, w, r in zip(instructions, losing, winning, _recs(records, len(instructions)))]
        return self.chat("editor_edit.v2", fields)


class Judge(Role):
    def score(self, instructions: Sequence[str], responses: Sequence[str],
              records: Sequence[dict | None] | None = None) -> list[dict[str, float] | None]:
        """``{"fluency", "factuality", "coherence"}`` (1-10) per response."""
        fields = [{"instruction": t, "response": a, "record": r}
                  for t, a, r in zip(instructions, responses, _recs(records, len(instructions)))]
        return self.parsed(self.complete("judge_score.v1", fields), parse.judge_scores)

    def check(self, instructions: Sequence[str], responses: Sequence[str], constraints: Sequence[Sequence[str]],
              records: Sequence[dict | None] | None = None) -> list[list[bool] | None]:
        """One verdict per constraint (FollowBench-style YES/NO) per response."""
        fields = [{"instruction": t, "response": a, "record": r,
                   "constraints": "\n".join(f"{i}. {c}" for i, c in enumerate(cs, 1))}
                  for t, a, cs, r in zip(instructions, responses, constraints, _recs(records, len(instructions)))]
        comps = self.complete("judge_check.v1", fields)
        out = [parse.verdicts(c.text, len(cs)) for c, cs in zip(comps, constraints)]
        self.count_unusable(out, [c.text for c in comps])
        return out

    def score_raw(self, instructions: Sequence[str], responses: Sequence[str],
                  records: Sequence[dict | None] | None = None) -> list[tuple[dict[str, float] | None, str]]:
        """:meth:`score` with each raw output kept: ``(scores or None, raw text)`` per response."""
        fields = [{"instruction": t, "response": a, "record": r}
                  for t, a, r in zip(instructions, responses, _recs(records, len(instructions)))]
        comps = self.complete("judge_score.v1", fields)
        return list(zip(self.parsed(comps, parse.judge_scores), [c.text for c in comps]))

    def compare(self, instructions: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                records: Sequence[dict | None] | None = None,
                tie_margin: float = 0.5) -> list[tuple[dict[str, str] | None, str]]:
        """Per dimension, which response is better as presented (``"A"``, ``"B"`` or ``"tie"``), and the raw output.

        ``tie_margin`` is read only by the oracle (world-judge score differences below it are ties).
        """
        fields = [{"instruction": t, "response_a": a, "response_b": b, "record": r, "tie_margin": tie_margin}
                  for t, a, b, r in zip(instructions, responses_a, responses_b, _recs(records, len(instructions)))]
        comps = self.complete("judge_pairwise.v1", fields)
        return list(zip(self.parsed(comps, parse.pairwise_verdicts), [c.text for c in comps]))

    def compare_swapped(self, instructions: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                        records: Sequence[dict | None] | None = None,
                        tie_margin: float = 0.5) -> list[dict[str, Any]]:
        """Each pair judged twice, positions swapped: per dimension ``win`` / ``tie`` / ``loss`` of response a.

        a wins a dimension only when it is preferred in both orders (and loses only when b is); a tie in either
        order, or orders that disagree (position bias), is a tie. Returns per pair ``{"outcome": {dim: ...} or
        None when either output was unparseable, "raw": [output a-first, output b-first], "verdicts": [...]}``.
        """
        ab = self.compare(instructions, responses_a, responses_b, records, tie_margin)
        ba = self.compare(instructions, responses_b, responses_a, records, tie_margin)
        out = []
        for (v1, raw1), (v2, raw2) in zip(ab, ba):
            outcome = None if v1 is None or v2 is None else {d: swap_outcome(v1[d], v2[d]) for d in parse.JUDGE_DIMS}
            out.append({"outcome": outcome, "raw": [raw1, raw2], "verdicts": [v1, v2]})
        return out


def swap_outcome(first: str, second: str) -> str:
    """Outcome for response a from the verdict with a shown first (A = a) and with b shown first (A = b)."""
    a_first = {"A": "win", "B": "loss", "tie": "tie"}[first]
    b_first = {"A": "loss", "B": "win", "tie": "tie"}[second]
    return a_first if a_first == b_first else "tie"


@dataclass
class Roles:
    teacher: Teacher
    referee: Referee
    generator: Generator
    editor: Editor
    judge: Judge

    def metrics(self) -> dict[str, dict[str, int]]:
        """Per-role counters, plus their totals under ``"total"`` (all of them: for logs and the run record)."""
        return _with_total({name: getattr(self, name).stats.as_dict() for name in ROLE_NAMES})

    def work_metrics(self) -> dict[str, dict[str, int]]:
        """Per-role work counters (calls, unparseable) plus ``"total"``: what a stage's ``metrics.json`` holds."""
        return _with_total({name: getattr(self, name).stats.work() for name in ROLE_NAMES})


def _with_total(per: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    per["total"] = {k: sum(p[k] for p in per.values()) for k in next(iter(per.values()))}
    return per


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALIGNPIPE_WORK_DIR", ".cache/alignpipe")) / "llm"


def build_roles(section: RolesSection, seed: int, kb: KB | None = None, cache_dir: str | Path | None = None,
                fan_out: FanOut | None = None) -> Roles:
    """Roles from params. Roles on the same backend settings share one backend (an hf model loads once).

    ``fan_out(spec) -> mapper``: when given, a role on a remote per-request backend (openai) sends its uncached
    requests through ``mapper`` (a flow's task runner, see :mod:`alignpipe.llm.fanout`) instead of its threads.
    """
    cache = DiskCache(cache_dir or section.cache_dir or default_cache_dir())
    backends: dict[str, Any] = {}
    built = {}
    classes = {"teacher": Teacher, "referee": Referee, "generator": Generator, "editor": Editor, "judge": Judge}
    for name in ROLE_NAMES:
        cfg: RoleSection = getattr(section, name)
        ident = json.dumps(cfg.model_dump(include={"backend", "model", "base_url", "api_key_env", "timeout_s",
                                                   "max_prompt_tokens", "dtype", "trust_remote_code"}),
                           sort_keys=True)
        if ident not in backends:
            backends[ident] = make_backend(cfg, kb, role=name)
        backend = backends[ident]
        mapper = None
        if fan_out is not None and backend.remote and not backend.batched:
            mapper = fan_out(call_spec(name, cfg))
        client = RoleClient(name, backend, cache, concurrency=cfg.concurrency, batch_size=cfg.batch_size,
                            max_retries=cfg.max_retries, backoff_s=cfg.backoff_s, backoff_max_s=cfg.backoff_max_s,
                            mapper=mapper, deadline_s=cfg.deadline_s if backend.remote and not backend.batched else None)
        temperature, max_tokens = ROLE_DEFAULTS[name]
        built[name] = classes[name](
            name, client,
            temperature=temperature if cfg.temperature is None else cfg.temperature,
            max_tokens=max_tokens if cfg.max_tokens is None else cfg.max_tokens,
            seed=derive_seed(seed, "roles", name), max_unusable=section.max_unusable_fraction,
        )  # fmt: skip
    return Roles(**built)
