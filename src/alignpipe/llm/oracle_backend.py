"""The built-in world as a backend: teacher, referee, generator, editor and judge computed by rules.

It reads the request's template name and fields (not the rendered messages) and answers in the format that
template asks for, so the roles parse its output exactly as an LLM's. Fields may carry the world's
instruction ``record``; the world behaviours need it (and the KB) where an LLM would read the text:

- teacher_answer: :meth:`Oracle.answer` (every constraint met); without a record, a description of the KB
  entity the instruction names;
- referee_compare: each answer scored ``1 + 9 * s``, ``s`` = the preference score (0.7 x share of constraints
  met + 0.3 x the judge's mean, rescaled), written in Lion's two score lines;
- generator_hard / generator_easy: a new record of the same category built as the world builds its groups,
  at the same level: same task family on other entities (hard), another family (easy: a rarer task); the
  record comes back in ``Completion.data["record"]``;
- editor_edit: the winning response with each of its sentences replaced by a close one (difflib ratio >= 0.8)
  of the losing response, kept only if it passes the record's verifiers, else the winner;
- judge_score / judge_check: :class:`Judge` scores and :func:`verify` verdicts as YES/NO lines;
- judge_pairwise: per dimension A / B / TIE from the :class:`Judge` scores of both responses (tie margin);
- followbench_judge: empty (the official FollowBench data has no world records): unparseable;
- webr_*: :mod:`alignpipe.llm.oracle_webr`.
Output it cannot produce (no record where one is needed, no KB) is an empty string: unparseable, skipped.
"""

from __future__ import annotations

import difflib
import random
import re
from typing import Any

from alignpipe.llm import oracle_webr
from alignpipe.llm.base import ChatRequest, Completion
from alignpipe.world import Judge, Oracle, response_score, verify
from alignpipe.world.instructions import FAMILIES, base_keys, build_group
from alignpipe.world.kb import KB
from alignpipe.world.oracle import OracleError


class OracleBackend:
    kind, remote, batched = "oracle", False, True

    def __init__(self, kb: KB | None = None):
        self.kb = kb
        self._judge = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def describe(self) -> str:
        return "oracle (built-in world)" if self.kb is not None else "oracle (no knowledge base)"

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        return [self.complete_one(r) for r in requests]

    def complete_one(self, request: ChatRequest) -> Completion:
        name = request.template.rsplit(".v", 1)[0]
        rng = random.Random(request.seed)
        f = request.fields
        webr = oracle_webr.respond(name, f, rng, self.kb)
        if webr is not None:
            return Completion(text=webr)
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise ValueError(f"the oracle backend has no behaviour for prompt template '{request.template}'")
        out = handler(f, rng)
        return out if isinstance(out, Completion) else Completion(text=out)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def judge(self) -> Judge:
        """The world's rule-based judge over this backend's KB (built once)."""
        if self._judge is None:
            self._judge = Judge(self.kb)
        return self._judge

    def _record(self, f: dict[str, Any]) -> dict[str, Any] | None:
        """The given record, else a constraint-free 'describe' record of the first KB entity the text names."""
        if f.get("record"):
            return f["record"]
        if self.kb is None:
            return None
        for e in self.kb.entities:
            if re.search(rf"\b{re.escape(e.name)}\b", f["instruction"]):
                return {"id": "free", "instruction": f["instruction"], "family": "describe", "constraints": [],
                        "entity_ids": [e.id], "task": {"attributes": self.kb.attributes(e.id)[:2]}}
        return None

    def _quality(self, record: dict[str, Any], response: str) -> float:
        return response_score(verify(record, response), self.judge().score(record, response), 0.3)

    # ---- roles -----------------------------------------------------------------------------------------------
    def _teacher_answer(self, f: dict[str, Any], rng: random.Random) -> str:
        record = self._record(f)
        if record is None:
            return ""
        try:
            return Oracle(self.kb).answer(record)
        except OracleError:
            return ""

    def _referee_compare(self, f: dict[str, Any], rng: random.Random) -> str:
        record = self._record(f)
        if record is None:
            return ""
        s1, s2 = (round(1 + 9 * self._quality(record, f[k]), 1) for k in ("answer_1", "answer_2"))
        return (f"Evaluation evidence: scored by the world's verifiers and judge.\n"
                f"Score of the Assistant 1: {s1}\nScore of the Assistant 2: {s2}")

    def _new_record(self, f: dict[str, Any], rng: random.Random, easy: bool) -> Completion:
        record = f.get("record")
        if not record or self.kb is None:
            return Completion(text="")
        cat, family = record["category"], record["family"]
        keys = base_keys(self.kb, rng.getrandbits(32))
        if easy and cat != "example":  # the world's "example" category only has "ask" tasks
            others = [fam for fam in FAMILIES if fam != family and keys.get(fam)]
            family = rng.choice(others) if others else family
        cands = [k for k in keys[family] if not set(k) & set(record["entity_ids"])] or list(keys[family])
        rng.shuffle(cands)
        group_id = f"{cat}-gen{rng.getrandbits(24):07d}"
        for key in cands[:10]:
            built = build_group(self.kb, Oracle(self.kb), group_id, cat, family, key, rng)
            if built is not None:
                new = built[0][record["level"]]
                return Completion(text=new["instruction"], data={"record": new})
        return Completion(text="")

    def _generator_hard(self, f: dict[str, Any], rng: random.Random) -> Completion:
        return self._new_record(f, rng, easy=False)

    def _generator_easy(self, f: dict[str, Any], rng: random.Random) -> Completion:
        return self._new_record(f, rng, easy=True)

    def _editor_edit(self, f: dict[str, Any], rng: random.Random) -> str:
        losing = oracle_webr.sentences(f["losing"]) or [f["losing"]]
        out = []
        for s in oracle_webr.sentences(f["winning"]) or [f["winning"]]:
            best = max(losing, key=lambda x: difflib.SequenceMatcher(None, x, s).ratio())
            out.append(best if difflib.SequenceMatcher(None, best, s).ratio() >= 0.8 else s)
        edited = " ".join(out)
        record = f.get("record")
        if record and not all(verify(record, edited)):
            return f["winning"]
        return edited

    def _judge_score(self, f: dict[str, Any], rng: random.Random) -> str:
        record = self._record(f) or {"instruction": f["instruction"], "constraints": [], "entity_ids": []}
        if self.kb is None:
            return ""
        s = self.judge().score(record, f["response"])
        return f"Fluency: {s['fluency']}\nFactuality: {s['factuality']}\nCoherence: {s['coherence']}"

    def _judge_check(self, f: dict[str, Any], rng: random.Random) -> str:
        record = f.get("record")
        if not record:
            return ""
        return "\n".join("YES" if v else "NO" for v in verify(record, f["response"]))

    def _followbench_judge(self, f: dict[str, Any], rng: random.Random) -> str:
        # The official FollowBench data has no world records, so the world's verifiers cannot judge it: an empty
        # output, which FollowBench's judge counts as unparseable (reported apart, never scored).
        return ""

    def _judge_pairwise(self, f: dict[str, Any], rng: random.Random) -> str:
        # The world's judge scores each response on its own; a dimension is a tie when the scores differ by less
        # than the tie margin (so both orders give the same verdict: the world judge has no position bias).
        record = self._record(f) or {"instruction": f["instruction"], "constraints": [], "entity_ids": []}
        if self.kb is None:
            return ""
        a, b = (self.judge().score(record, f[k]) for k in ("response_a", "response_b"))
        margin = float(f.get("tie_margin", 0.5))
        names = {"fluency": "Fluency", "factuality": "Factuality", "coherence": "Coherence"}
        lines = []
        for key, name in names.items():
            diff = float(a[key]) - float(b[key])
            lines.append(f"{name}: {'TIE' if abs(diff) < margin else 'A' if diff > 0 else 'B'}")
        return "\n".join(lines)
