"""WebR, Web Reconstruction (YJiangcm/WebR: ``create_data_gpt_4o_mini.py``, ``post_process.py``, ``utils.py``).

    pages = load_pages("web_en_1k.json")                      # [{"id", "webpage"}], errors name the record
    plans = plan_pages(pages, cfg, seed)                      # type, kept sections, word, length limit per page
    rows, stats = run_webr(pages, cfg, roles, seed)            # {prompt_id, messages} rows + counts

Per page, as the authors do: the generator infers an author persona (<= 30 words) from the whole page; the
page is cut to a random prefix of its ``\\n\\n`` sections with probability ``section_prob`` (else kept whole);
pages are split Web-as-Instruction : Web-as-Response = 2 : 1, each half "all" / "part" (WI_all, WI_part,
WR_all, WR_part in the authors' 2:2:1:1 slices); the generator writes the request with a word drawn from
{request, instruction} (WI) or {request, question, instruction} (WR) and a length limit from ``len_limits``;
the teacher answers: WI from page + request, WR first from the request alone (rollout), then refined with the
page as provided information. Post-processing per half: drop empty requests/answers and refusals (answers
starting "I'm sorry" / "I apologize"), then MinHash-LSH dedup of requests (threshold 0.7, 128 permutations,
datasketch; the authors keep the lowest index of every query result). Output: WI user turn = request + page or
page + request (50/50); WR user turn = the request alone; a refined answer that starts by announcing an
"improved answer" loses that first paragraph.

Where this differs from the authors' scripts, and why:
- Slices are rounded proportions of the page count (n*2/6, n*4/6, n*5/6), not ``n//6*k``: equal for n
  divisible by 6, and a 12-page world still gets every type. Pages are shuffled with the seed first (the
  authors' input order is already random).
- MinHash shingles are lower-cased word tokens, not Llama-3 tokenizer ids: no hub download, the same for
  every backend, and near-duplicate requests share words as much as tokens.
- A page whose persona or request came back empty is dropped and counted (the authors' threads drop failed
  calls silently).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignpipe.config import WebRSection
from alignpipe.llm.parse import REFUSALS
from alignpipe.utils.io import DataError, read_records
from alignpipe.utils.seed import derive_seed

TYPES = ("WI_all", "WI_part", "WR_all", "WR_part")
# The most text one page may hold (characters of its 'webpage' field): WebR's pages are web articles of a few
# thousand words, and every page goes whole into several prompts, so a page past this is a dump or a corrupt
# record (a 100 MB page would be sent to the generator as is). Pages over it fail naming the file and record.
MAX_PAGE_CHARS = 1_000_000
WORDS = {"WI": ("request", "instruction"), "WR": ("request", "question", "instruction")}


def load_pages(path: str | Path) -> list[dict[str, Any]]:
    """``[{"id", "webpage"}]`` from a JSON list or a JSONL file of ``{"webpage": text}`` records.

    Raises:
        DataError: the file is missing or not JSON, or a record is not an object with a non-empty string
            ``webpage`` of at most :data:`MAX_PAGE_CHARS` characters; the message names the file and the record
            (index in a list, line in JSONL).
    """
    pages = []
    for i, (where, r) in enumerate(read_records(path, required={"webpage": str})):
        if not r["webpage"].strip():
            raise DataError(f"{where}: field 'webpage' is empty; expected the page's text")
        if len(r["webpage"]) > MAX_PAGE_CHARS:
            raise DataError(f"{where}: field 'webpage' is {len(r['webpage'])} characters, over the limit of "
                            f"{MAX_PAGE_CHARS} per page (webr.MAX_PAGE_CHARS; WebR reads web articles): split the "
                            "page or leave it out")
        pages.append({"id": str(r.get("id", f"page-{i:05d}")), "webpage": r["webpage"]})
    return pages


def section(webpage: str, rng: random.Random, prob: float) -> tuple[str, int, int]:
    """(text, sections kept, sections in all): a random prefix with probability ``prob``, else every section.

    Sections are the ``\\n\\n``-separated blocks with leading '#' and spaces stripped (the authors' ``section``).
    """
    parts = [w.lstrip("#").strip() for w in webpage.split("\n\n")]
    if len(parts) == 1:
        return webpage, 1, 1
    keep = rng.randint(1, len(parts)) if rng.random() < prob else len(parts)
    return "\n\n".join(parts[:keep]), keep, len(parts)


@dataclass
class Plan:
    """Every random choice made for one page, drawn before any call (so reruns and backends agree)."""

    page_id: str
    type: str  # one of TYPES
    web: str  # the (sectioned) page the request and answer are built on
    sections_kept: int
    sections_total: int
    word: str
    len_limit: int
    request_first: bool  # WI: the user turn is request + page (else page + request)


def plan_pages(pages: list[dict[str, Any]], cfg: WebRSection, seed: int) -> list[Plan]:
    """Seeded shuffle, the 2:2:1:1 type slices, then each page's own choices from its own stream."""
    order = list(range(len(pages)))
    random.Random(derive_seed(seed, "webr", "order")).shuffle(order)
    n = len(order)
    bounds = [0, round(n * 2 / 6), round(n * 4 / 6), round(n * 5 / 6), n]
    plans = []
    for t, kind in enumerate(TYPES):
        if not cfg.part and kind.endswith("part"):
            kind = kind.replace("part", "all")
        for i in order[bounds[t] : bounds[t + 1]]:
            page = pages[i]
            rng = random.Random(derive_seed(seed, "webr", "page", page["id"]))
            web, kept, total = section(page["webpage"], rng, cfg.section_prob)
            plans.append(Plan(page["id"], kind, web, kept, total, rng.choice(WORDS[kind[:2]]),
                              rng.choice(cfg.len_limits), rng.random() > 0.5))
    return plans


def is_refusal(request: str | None, response: str | None) -> bool:
    """The authors' filter: an empty request or response, or a response opening with an apology."""
    return not request or not response or response.startswith(REFUSALS)


def _shingles(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def minhash_duplicates(texts: list[str], threshold: float = 0.7, num_perm: int = 128) -> set[int]:
    """Indices WebR's ``self_minhash_rm`` removes: for every text's LSH query result, all but the lowest index."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        for token in sorted(_shingles(text)):
            m.update(token.encode("utf-8"))
        lsh.insert(i, m)
        hashes.append(m)
    removed: set[int] = set()
    for m in hashes:
        found = sorted(lsh.query(m))
        removed.update(found[1:])
    return removed


def _strip_announcement(answer: str) -> str:
    """Drop a first paragraph like "Here is the improved answer:" (the authors' post_process rule)."""
    if "improved answer" in answer.lower():
        rest = "\n\n".join(answer.split("\n\n")[1:]).strip("-").strip("\n").strip()
        return rest or answer
    return answer


def build_rows(items: list[dict[str, Any]], cfg: WebRSection, seed: int) -> tuple[list[dict], dict[str, Any]]:
    """Refusal filter, dedup per half, 2:1 cap, distinct pages for WR, then the ``{prompt_id, messages}`` rows.

    ``items``: one dict per planned page with ``plan`` (a :class:`Plan`), ``request`` and ``response``.
    """
    stats: dict[str, Any] = {"refusals_removed": {}, "duplicates_removed": {}}
    halves: dict[str, list[dict]] = {"WI": [], "WR": []}
    for half in halves:
        pool = [it for it in items if it["plan"].type.startswith(half)]
        kept = [it for it in pool if not is_refusal(it["request"], it["response"])]
        stats["refusals_removed"][half] = len(pool) - len(kept)
        if cfg.dedup and kept:
            dup = minhash_duplicates([it["request"] for it in kept], cfg.dedup_threshold, cfg.num_perm)
            kept = [it for i, it in enumerate(kept) if i not in dup]
            stats["duplicates_removed"][half] = len(dup)
        else:
            stats["duplicates_removed"][half] = 0
        random.Random(derive_seed(seed, "webr", "mix", half)).shuffle(kept)
        halves[half] = kept
    if cfg.max_rows is not None:
        halves["WI"] = halves["WI"][: cfg.max_rows // 3 * 2]
    used = {it["plan"].web for it in halves["WI"]}
    wr, same_page = [], 0
    for it in halves["WR"]:
        if cfg.max_rows is not None and len(wr) == cfg.max_rows // 3:
            break
        if it["plan"].web in used:  # a WR row never reuses a page text already in the data
            same_page += 1
            continue
        used.add(it["plan"].web)
        wr.append(it)
    stats["same_page_removed"] = same_page
    rows, meta = [], []
    for it in halves["WI"] + wr:
        plan: Plan = it["plan"]
        if plan.type.startswith("WI"):
            user = f"{it['request']}\n\n{plan.web}" if plan.request_first else f"{plan.web}\n\n{it['request']}"
            answer = it["response"]
        else:
            user, answer = it["request"], _strip_announcement(it["response"])
        pid = f"web_data_{len(rows)}"
        rows.append({"prompt_id": pid, "messages": [{"role": "user", "content": user},
                                                    {"role": "assistant", "content": answer}]})
        meta.append({"prompt_id": pid, **{k: v for k, v in asdict(plan).items() if k != "web"},
                     "persona": it["persona"]})
    stats["final"] = dict(sorted(Counter(m["type"] for m in meta).items()))
    return rows, {"stats": stats, "meta": meta}


def sft_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in the sft stage's prompt-completion format (``{"id", "prompt", "completion"}``)."""
    return [{"id": r["prompt_id"], "prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
