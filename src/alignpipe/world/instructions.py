"""Instruction groups built as FollowBench builds them: a base task and five evolutions, one constraint each.

A *base task* is a task family applied to entities ("Describe Velmora.", "Compare Velmora and Tarsk by
age."). A *group* is the level-0 record of a base task and its levels 1..5, where level L's constraints are
level L-1's plus ONE new constraint from the group's category ("mixed": from content, situation, style and
format, at least two of them). A candidate constraint is kept only if it shares no slot with the ones
before, the oracle can still satisfy all of them, and (when some candidate allows it) the previous level's
answer does not already satisfy it, so every level asks for a change.

Train and eval pools draw base tasks from disjoint key sets (family + entities), so no base task and no
group is shared. Each group has its own random stream, so the eval pool does not move when the train pool
grows.
"""

from __future__ import annotations

import copy
import random
from itertools import count
from typing import Any

from alignpipe.utils.seed import derive_seed
from alignpipe.world.constraints import Ctx, get_type, types_in
from alignpipe.world.kb import KB, QUESTIONS, TYPES
from alignpipe.world.oracle import Oracle, OracleError

FAMILIES = ("describe", "facts", "compare", "ask", "note")
MIXED_FROM = ("content", "situation", "style", "format")
LEVELS = 5
TEXTS = {
    "describe": ("Describe {name}.", "Tell me about {name}.", "What can you say about {name}?"),
    "facts": ("List {k} facts about {name}.", "Give {k} facts about {name}."),
    "note": ("Write a short note about {name} for a friend.", "Write a short letter to a friend about {name}."),
}
COMPARE_BY = {
    "region": "region", "founded": "age", "known_for": "what they are known for", "population": "population",
    "flows_through": "the city they flow through", "length": "length", "source": "source",
    "water": "water color", "born_in": "birthplace", "invention": "invention", "field": "field",
    "birth_year": "birth year", "habitat": "home", "diet": "food", "color": "color", "legs": "legs",
    "held_in": "place", "month": "month", "honors": "what they honor", "symbol": "symbol",
}
_NUMBER = {2: "two", 3: "three"}
VOCAB = (TEXTS, COMPARE_BY, QUESTIONS, _NUMBER)


def base_keys(kb: KB, seed: int) -> dict[str, list[tuple[str, ...]]]:
    """Every base-task key per family: single entities, and same-type neighbour pairs for ``compare``."""
    rng = random.Random(derive_seed(seed, "world", "pairs"))
    pairs = []
    for t in TYPES:
        ids = [e.id for e in kb.of_type(t)]
        rng.shuffle(ids)
        pairs += [(ids[i], ids[i + 1]) for i in range(len(ids) - 1)]  # linear in entities, unlike all pairs
    single = [(e.id,) for e in kb.entities]
    return {f: (pairs if f == "compare" else list(single)) for f in FAMILIES}


def split_keys(keys: dict[str, list[tuple]], seed: int, eval_groups: int) -> tuple[dict, dict]:
    """Disjoint (train, eval) keys per family; a family with fewer than two keys is left out of both."""
    train, evals = {}, {}
    for fam, ks in keys.items():
        if len(ks) < 2:
            continue
        ks = list(ks)
        random.Random(derive_seed(seed, "world", "split", fam)).shuffle(ks)
        n_eval = max(1, min(len(ks) // 2, eval_groups))  # depends on the eval size only
        evals[fam], train[fam] = ks[:n_eval], ks[n_eval:]
    return train, evals


def base_task(kb: KB, family: str, key: tuple[str, ...], rng: random.Random) -> dict[str, Any]:
    """The level-0 task for ``family`` on the key's entities (text and the facts its answer uses)."""
    name, attrs = kb.name(key[0]), kb.attributes(key[0])
    if family == "compare":
        a = rng.choice(attrs)
        return {"text": f"Compare {name} and {kb.name(key[1])} by {COMPARE_BY[a]}.", "attribute": a}
    if family == "ask":
        a = rng.choice(attrs)
        return {"text": QUESTIONS[a].format(name=name), "attribute": a}
    k = rng.choice((2, 3)) if family == "facts" else 2
    text = rng.choice(TEXTS[family]).format(name=name, k=_NUMBER[k])
    return {"text": text, "attributes": rng.sample(attrs, k)}


def make_record(group_id: str, category: str, level: int, family: str, entity_ids: list[str],
                task: dict[str, Any], constraints: list[dict[str, Any]]) -> dict[str, Any]:
    """An instruction record (see docs/architecture.md, "Records")."""
    phrases = [get_type(c["type"]).phrase(c["params"]) for c in constraints]
    return {"id": f"{group_id}-L{level}", "group_id": group_id, "category": category, "level": level,
            "family": family, "instruction": " ".join([task["text"], *phrases]),
            "constraints": copy.deepcopy(constraints), "entity_ids": list(entity_ids), "task": dict(task)}


def _slots(constraints: list[dict[str, Any]]) -> set[str]:
    return set().union(*(get_type(c["type"]).slots_for(c["params"]) for c in constraints))


def _candidates(category: str, family: str, constraints: list[dict[str, Any]]) -> list:
    """Types that may add the next level: right category and family, no slot clash with the ones so far."""
    if category == "mixed":
        pool = [t for cat in MIXED_FROM for t in types_in(cat)]
        if len(constraints) == 1:  # level 2 brings a second category, so "mixed" always mixes
            pool = [t for t in pool if t.category != constraints[0]["category"]]
    else:
        pool = types_in(category)
    used = _slots(constraints)
    return [t for t in pool if (t.families is None or family in t.families)
            and not ({*t.slots, f"type:{t.name}"} & used)]


def _weighted_order(types: list, rng: random.Random) -> list:
    """A random order where a type of weight w comes early w times as often (Efraimidis-Spirakis keys)."""
    keyed = [(rng.random() ** (1.0 / t.weight), i) for i, t in enumerate(types)]
    return [types[i] for _, i in sorted(keyed, reverse=True)]


def build_group(kb: KB, oracle: Oracle, group_id: str, category: str, family: str, key: tuple[str, ...],
                rng: random.Random) -> tuple[list[dict[str, Any]], list[str]] | None:
    """Records of levels 0..5 and their oracle answers, or None if some level found no constraint."""
    task, eids = base_task(kb, family, key, rng), list(key)
    constraints: list[dict[str, Any]] = []
    records = [make_record(group_id, category, 0, family, eids, task, constraints)]
    answers = [oracle.answer(records[0])]
    for level in range(1, LEVELS + 1):
        used = _slots(constraints)
        chosen = fallback = None
        for ctype in _weighted_order(_candidates(category, family, constraints), rng):
            ctx = Ctx(kb, family, eids, task, constraints, answers[-1])
            params = ctype.sample(rng, ctx)
            if params is None or ctype.slots_for(params) & used:
                continue
            c = {"type": ctype.name, "category": ctype.category, "params": params}
            if len(_candidates(category, family, constraints + [c])) < LEVELS - level:
                continue  # a dead end: too few compatible types left for the remaining levels
            rec = make_record(group_id, category, level, family, eids, task, constraints + [c])
            try:
                ans = oracle.answer(rec)
            except OracleError:
                continue
            if not ctype.verify(params, answers[-1]):
                chosen = (c, rec, ans)
                break
            fallback = fallback or (c, rec, ans)
        chosen = chosen or fallback
        if chosen is None:
            return None
        constraints.append(chosen[0])
        records.append(chosen[1])
        answers.append(chosen[2])
    return records, answers


def build_pool(kb: KB, oracle: Oracle, seed: int, pool: str, keys: dict[str, list[tuple]],
               categories: list[str], n_groups: int, first_index: int) -> tuple[list[dict], dict[str, str]]:
    """``n_groups`` groups per category, numbered from ``first_index``; returns records and oracle answers."""
    records: list[dict[str, Any]] = []
    answers: dict[str, str] = {}
    for category in categories:
        families = ["ask"] if category == "example" else [f for f in FAMILIES if f in keys]
        if not all(f in keys for f in families):
            raise ValueError(f"{pool} pool has no base tasks for category '{category}' (too few entities?)")
        cursors = {f: _cycle(keys[f], random.Random(derive_seed(seed, "world", pool, category, f)))
                   for f in families}
        for g in range(n_groups):
            group_id = f"{category}-{first_index + g:04d}"
            for attempt in count():
                rng = random.Random(derive_seed(seed, "world", pool, category, g, attempt))
                family = rng.choice(families)
                built = build_group(kb, oracle, group_id, category, family, next(cursors[family]), rng)
                if built is not None:
                    break
                if attempt >= 50:
                    raise RuntimeError(f"could not build group {group_id}: no compatible constraints")
            records += built[0]
            answers.update({r["id"]: a for r, a in zip(*built)})
    return records, answers


def _cycle(keys: list[tuple], rng: random.Random):
    """Endless walk over shuffled keys, reshuffled each round: every key is used before any repeats."""
    while True:
        ks = list(keys)
        rng.shuffle(ks)
        yield from ks
