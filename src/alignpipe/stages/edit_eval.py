"""Stage ``edit_eval`` (LTE's inference phase): retrieve stored edits for each question, answer, score.

Run it (normally ``python -m flows.edit_eval`` / ``dvc repro edit_eval``)::

    from alignpipe.config import load_params
    from alignpipe.stages import edit_eval as evaluate
    evaluate.run(load_params("params.yaml"), edits_dir="data/edits", sft_dir="data/sft",
                 lte_dir="data/edit_align", out_dir="data/edit_eval")

Two systems answer the same retrieval-augmented prompts (:func:`alignpipe.methods.lte.template.render` over the top-k
BM25 hits of the question among the stored edits): ``icl``, the SFT policy with in-context edits (no LTE
training), and ``lte``, the policy after the ``edit_align`` stage. The unedited SFT policy's answers to the bare
locality questions are the reference for locality. Answers are greedy (:func:`alignpipe.models.generate`).

Editing settings (``edit_eval.modes`` x ``edit_eval.sizes``; LTE's EasyEdit loop):

- ``batch``: the first N eval edits are stored at once, then every question of those N edits is asked;
- ``sequential``: the edits arrive one by one; each edit's questions are asked right after it is stored, with
  the store holding it and every earlier edit (so size N reports the first N edits of one stream).

Outputs (``data/edit_eval/``, atomic): ``generations.jsonl`` (one row per system, mode, size and question:
retrieved edit ids, prompt, response, verdict), ``metrics.json`` (per system / mode / size: edit success,
rephrase, portability, locality, fluency, retrieval hit rate, counts) and ``config.json``.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from alignpipe.config import EditEvalSection, Params
from alignpipe.methods.lte import metrics as M
from alignpipe.methods.lte.records import in_scope, out_of_scope, read_edits
from alignpipe.methods.lte.retrieve import EditStore
from alignpipe.methods.lte.template import render
from alignpipe.models import generate, load_model
from alignpipe.utils.io import atomic_dir, dumps, one_line, sha256_file, write_json, write_jsonl
from alignpipe.utils.seed import seed_everything

log = logging.getLogger(__name__)

SYSTEMS = ("icl", "lte")


def resolve_sizes(sizes: list[int | None], n: int) -> list[int]:
    """Store sizes as numbers: null = all ``n`` edits, larger sizes clipped to ``n``, repeats dropped."""
    out: list[int] = []
    for s in sizes:
        size = n if s is None else min(s, n)
        if s is not None and s > n:
            log.warning("edit_eval.sizes: %d > %d eval edits; using %d", s, n, n)
        if size not in out:
            out.append(size)
    return out


def _questions(edit: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(kind, q, answers) for kind, q, answers, _ in in_scope(edit) + out_of_scope(edit)]


def plan(edits: list[dict[str, Any]], cfg: EditEvalSection) -> list[dict[str, Any]]:
    """Every (mode, size, edit, question) to ask, with the store indices BM25 retrieves for it."""
    facts = [e["fact"] for e in edits]
    sizes = resolve_sizes(cfg.sizes, len(edits))
    queries: list[dict[str, Any]] = []

    def ask(mode: str, size: int, i: int, store: EditStore) -> None:
        for kind, question, answers in _questions(edits[i]):
            hits = store.search(question, cfg.top_k)
            queries.append({"mode": mode, "size": size, "edit": i, "kind": kind, "question": question,
                            "answers": answers, "retrieved": hits,
                            "prompt": render([facts[j] for j in hits], question)})

    if "batch" in cfg.modes:
        for size in sizes:
            store = EditStore(facts[:size])
            for i in range(size):
                ask("batch", size, i, store)
    if "sequential" in cfg.modes:
        # One stream over the largest size; size N reports its first N edits (each asked after its insertion).
        for i in range(max(sizes)):
            stream_store = EditStore(facts[: i + 1])
            before = len(queries)
            ask("sequential", max(sizes), i, stream_store)
            for q in queries[before:]:
                q["sizes"] = [s for s in sizes if i < s]
    for q in queries:
        q.setdefault("sizes", [q["size"]])
    return queries


def answer(model_dir: str | Path, prompts: list[str], params: Params) -> dict[str, str]:
    """Greedy answers of the model in ``model_dir`` to each distinct prompt (a single user turn)."""
    unique = sorted(set(prompts))
    model, tokenizer = load_model(model_dir, params.model)
    try:
        out = generate(model, tokenizer, [[{"role": "user", "content": p}] for p in unique],
                       params.edit_eval.max_new_tokens, params.edit_eval.batch_size)
    finally:
        del model
        gc.collect()
    return dict(zip(unique, out))


def score(edits: list[dict[str, Any]], queries: list[dict[str, Any]], responses: dict[str, str],
          reference: dict[str, str], system: str) -> list[dict[str, Any]]:
    """One generation row per query with its ``score``: in-scope, 1.0 when the answer contains the new answer;
    locality, the word agreement with the unedited SFT policy's answer to the bare question."""
    rows = []
    for q in queries:
        response = responses[q["prompt"]]
        if q["kind"] == "locality":
            ok = round(M.agreement(response, reference[q["question"]]), 6)
        else:
            ok = float(M.contains_answer(response, q["answers"]))
        rows.append({"system": system, "mode": q["mode"], "sizes": q["sizes"], "edit_id": edits[q["edit"]]["id"],
                     "edit": q["edit"], "kind": q["kind"], "question": q["question"], "prompt": q["prompt"],
                     "retrieved": [edits[j]["id"] for j in q["retrieved"]],
                     "hit": q["edit"] in q["retrieved"], "response": response, "score": ok})
    return rows


def summarize(rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """Metrics of one system / mode over the rows of the first ``size`` edits (per-edit means, then the mean)."""
    per_edit: dict[int, dict[str, list[float]]] = {}
    fluent: list[str] = []
    hits: list[float] = []
    for r in rows:
        if size not in r["sizes"]:
            continue
        per_edit.setdefault(r["edit"], {}).setdefault(r["kind"], []).append(r["score"])
        if r["kind"] == "prompt":
            fluent.append(r["response"])
            hits.append(float(r["hit"]))

    def metric(kind: str) -> float:
        values = [M.mean(k[kind]) for k in per_edit.values() if kind in k]
        return round(M.mean(values), 4) if values else None

    fl = M.fluency(fluent)
    return {"edit_success": metric("prompt"), "rephrase": metric("rephrase"), "portability": metric("portability"),
            "locality": metric("locality"), "fluency": round(fl, 4) if fluent else None,
            "retrieval_hit": round(M.mean(hits), 4) if hits else None, "n_edits": len(per_edit),
            "n_questions": sum(len(v) for k in per_edit.values() for v in k.values())}


def stage_config(params: Params, edits_dir: str | Path, sft_dir: str | Path, lte_dir: str | Path) -> dict[str, Any]:
    """What the outputs depend on (``config.json``)."""
    return {"seed": params.seed, "model": params.model.model_dump(), "edit_eval": params.edit_eval.model_dump(),
            "retriever": "bm25plus (rank-bm25)",
            "inputs": {"eval_edits_sha256": sha256_file(Path(edits_dir) / "eval.jsonl"),
                       "icl_model": str(Path(sft_dir) / "model"), "lte_model": str(Path(lte_dir) / "model")}}


def locality_questions(queries: list[dict[str, Any]]) -> list[str]:
    """The bare locality questions: the unedited SFT policy's answers to them are the locality reference."""
    return sorted({q["question"] for q in queries if q["kind"] == "locality"})


def finish(params: Params, edits: list[dict[str, Any]], queries: list[dict[str, Any]], sft_answers: dict[str, str],
           lte_answers: dict[str, str], config: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Score both systems, summarize per mode and size, write the outputs; returns the metrics."""
    reference = {q: sft_answers[q] for q in locality_questions(queries)}
    rows = score(edits, queries, sft_answers, reference, "icl") + score(edits, queries, lte_answers, reference, "lte")
    sizes = resolve_sizes(params.edit_eval.sizes, len(edits))
    results: dict[str, Any] = {}
    for system in SYSTEMS:
        for mode in params.edit_eval.modes:
            subset = [r for r in rows if r["system"] == system and r["mode"] == mode]
            results.setdefault(system, {})[mode] = {str(s): summarize(subset, s) for s in sizes}
    metrics = {"sizes": sizes, "n_eval_edits": len(edits), "top_k": params.edit_eval.top_k, "results": results}
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "generations.jsonl", rows)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "config.json", config)
    log.info("edit_eval metrics: %s", one_line(metrics))
    return metrics


def run(params: Params, edits_dir: str | Path = "data/edits", sft_dir: str | Path = "data/sft",
        lte_dir: str | Path = "data/edit_align", out_dir: str | Path = "data/edit_eval") -> dict[str, Any]:
    """Plan, answer with both systems, score, write; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, edits_dir, sft_dir, lte_dir)
    edits = read_edits(Path(edits_dir) / "eval.jsonl")
    queries = plan(edits, params.edit_eval)
    log.info("edit_eval: %d eval edits, sizes %s, %d queries", len(edits),
             resolve_sizes(params.edit_eval.sizes, len(edits)), len(queries))
    prompts = [q["prompt"] for q in queries]
    sft_answers = answer(Path(sft_dir) / "model", prompts + locality_questions(queries), params)
    lte_answers = answer(Path(lte_dir) / "model", prompts, params)
    return finish(params, edits, queries, sft_answers, lte_answers, config, out_dir)
