"""Groups are built as FollowBench builds them: cumulative levels, one category, disjoint train/eval tasks."""

from __future__ import annotations

import re
from collections import defaultdict

from alignpipe.world import REGISTRY
from alignpipe.world.instructions import MIXED_FROM


def _groups(records):
    groups = defaultdict(list)
    for r in records:
        groups[r["group_id"]].append(r)
    return {g: sorted(rs, key=lambda r: r["level"]) for g, rs in groups.items()}


def test_pool_sizes_and_ids(world):
    cfg = world.cfg
    assert len(world.train) == 6 * 6 * cfg.train_groups_per_category
    assert len(world.eval) == 6 * 6 * cfg.eval_groups_per_category
    for r in world.train + world.eval:
        assert re.fullmatch(r"[a-z]+-\d{4}-L[0-5]", r["id"]) and r["id"] == f"{r['group_id']}-L{r['level']}"
    assert len({r["id"] for r in world.train + world.eval}) == len(world.train) + len(world.eval)


def test_levels_are_cumulative(world):
    for pool in (world.train, world.eval):
        for gid, recs in _groups(pool).items():
            assert [r["level"] for r in recs] == [0, 1, 2, 3, 4, 5], gid
            base = recs[0]
            assert base["constraints"] == [] and base["instruction"] == base["task"]["text"]
            for prev, cur in zip(recs, recs[1:]):
                assert len(cur["constraints"]) == cur["level"]
                assert cur["constraints"][:-1] == prev["constraints"], cur["id"]
                assert cur["instruction"].startswith(prev["instruction"])
                assert {k: cur[k] for k in ("category", "family", "entity_ids", "task")} == {
                    k: prev[k] for k in ("category", "family", "entity_ids", "task")}


def test_constraints_fit_their_category_and_never_clash(world):
    for gid, recs in _groups(world.train + world.eval).items():
        top = recs[-1]
        cats = [c["category"] for c in top["constraints"]]
        if top["category"] == "mixed":
            assert set(cats) <= set(MIXED_FROM) and len(set(cats)) >= 2, gid
        else:
            assert set(cats) == {top["category"]}, gid
        slots = [REGISTRY[c["type"]].slots_for(c["params"]) for c in top["constraints"]]
        for i in range(len(slots)):
            for j in range(i):
                assert not slots[i] & slots[j], (gid, top["constraints"][i]["type"], top["constraints"][j]["type"])
        for c in top["constraints"]:
            assert REGISTRY[c["type"]].category == c["category"]
        if top["category"] == "example":
            assert top["family"] == "ask" and top["constraints"][0]["type"] == "ex_label"


def test_train_and_eval_share_no_base_task_or_group(world):
    def tasks(pool):
        return {(r["family"], tuple(r["entity_ids"])) for r in pool}

    assert not tasks(world.train) & tasks(world.eval)
    assert not {r["group_id"] for r in world.train} & {r["group_id"] for r in world.eval}


def test_every_level_asks_for_a_change(world):
    # Each new constraint should fail on the previous level's oracle answer (or the builder had no choice).
    from alignpipe.world import verify

    recs = [r for r in world.train if r["level"] > 0]
    prev = {r["id"]: r for r in world.train}
    changed = sum(not verify(r, world.answers[prev[f"{r['group_id']}-L{r['level'] - 1}"]["id"]])[-1] for r in recs)
    assert changed / len(recs) >= 0.9
