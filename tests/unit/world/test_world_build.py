"""Building, saving and loading the world: determinism, files, corpus, pages, loaders and the stage entry."""

from __future__ import annotations

import json

import pytest

from alignpipe.config import Params, WorldSection
from alignpipe.utils.io import DataError
from alignpipe.world import build_world, load_instructions, load_kb
from alignpipe.world.corpus import DIALOGUE
from alignpipe.stages.world import run

SMALL = WorldSection(n_entities=16, train_groups_per_category=3, eval_groups_per_category=2, corpus_paraphrases=3)
FILES = ("kb.json", "train.jsonl", "eval.jsonl", "sft.jsonl", "corpus.txt", "pages.jsonl", "metrics.json")


def _saved(tmp_path, name, seed, cfg=SMALL):
    out = tmp_path / name
    build_world(seed, cfg).save(out)
    return {f: (out / f).read_bytes() for f in FILES}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b = _saved(tmp_path, "a", 7), _saved(tmp_path, "b", 7)
    assert a == b
    c = _saved(tmp_path, "c", 8)
    assert all(a[f] != c[f] for f in FILES)


def test_eval_pool_does_not_move_when_train_grows(tmp_path):
    small = build_world(7, SMALL)
    bigger = build_world(7, SMALL.model_copy(update={"train_groups_per_category": 5}))
    assert small.eval == bigger.eval and small.kb.to_json() == bigger.kb.to_json()


def test_saved_files_and_metrics(world, tmp_path):
    metrics = world.save(tmp_path)
    assert all((tmp_path / f).is_file() for f in FILES)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["train"]["by_category_level"]["mixed"] == {str(lv): 40 for lv in range(6)}
    assert metrics["eval"]["records"] == 288 and metrics["n_entities"] == 48
    kb = load_kb(tmp_path / "kb.json")
    assert kb.to_json() == world.kb.to_json() and len({e.name for e in kb.entities}) == 48
    assert load_instructions(tmp_path / "eval.jsonl") == world.eval


def test_sft_rows_cover_the_train_pool(world):
    rows = world.sft_rows()
    assert [r["id"] for r in rows] == [r["id"] for r in world.train]
    row = rows[7]
    assert row["prompt"] == [{"role": "user", "content": world.train[7]["instruction"]}]
    assert row["completion"] == [{"role": "assistant", "content": world.answers[row["id"]]}]


def test_corpus_has_facts_and_train_dialogues_but_no_eval():
    world = build_world(1234, WorldSection(corpus_instruction_copies=1))
    corpus = world.corpus
    kb = world.kb
    e = kb.entities[0]
    attr = kb.attributes(e.id)[0]
    assert corpus.count(kb.value(e.id, attr)) >= world.cfg.corpus_paraphrases
    r = world.train[5]
    assert DIALOGUE.format(instruction=r["instruction"], response=world.answers[r["id"]]) in corpus
    train_prompts = {t["instruction"] for t in world.train}
    eval_only = [r["instruction"] for r in world.eval if r["instruction"] not in train_prompts]
    assert eval_only and not any(f"User: {q}\n" in corpus for q in eval_only)


def test_pages_are_multi_section(world):
    assert len(world.pages) == len(world.kb)
    page = world.pages[0]
    assert set(page) == {"id", "entity_id", "webpage"}
    sections = page["webpage"].split("\n\n")
    assert len(sections) >= 5 and world.kb.name(page["entity_id"]) == sections[1]


@pytest.mark.parametrize("line, message", [
    ('{"id": "a-0000-L0", "group_id": "a-0000", "category": "content", "level": 0, "instruction": "x"',
     "not valid JSON"),
    ('{"id": "a-0000-L0", "group_id": "a-0000", "category": "content", "level": 0, "instruction": "x"}',
     "missing field 'constraints'"),
    ('{"id": "a-0000-L6", "group_id": "a-0000", "category": "content", "level": 6, "instruction": "x", '
     '"constraints": []}', "level 6 not allowed"),
    ('{"id": "a-0000-L1", "group_id": "a-0000", "category": "poetry", "level": 1, "instruction": "x", '
     '"constraints": []}', "category 'poetry' not allowed"),
    ('{"id": "a-0000-L1", "group_id": "a-0000", "category": "content", "level": 1, "instruction": "x", '
     '"constraints": []}', "needs 1 constraints"),
    ('{"id": "a-0000-L1", "group_id": "a-0000", "category": "content", "level": 1, "instruction": "x", '
     '"constraints": [{"type": "sing", "params": {}}]}', "unknown constraint type 'sing'"),
])
def test_load_instructions_names_file_and_line(world, tmp_path, line, message):
    good = json.dumps(world.eval[0])
    path = tmp_path / "eval.jsonl"
    path.write_text(f"{good}\n\n{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_instructions(path)
    assert f"{path} line 4" in str(err.value) and message in str(err.value)


def test_stage_run_writes_everything(tmp_path):
    params = Params(seed=5, world=SMALL)
    metrics = run(params, out_dir=tmp_path / "world")
    out = tmp_path / "world"
    assert all((out / f).is_file() for f in (*FILES, "config.json"))
    assert json.loads((out / "config.json").read_text()) == {"seed": 5, "world": SMALL.model_dump(mode="json")}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "prefs.jsonl").read_text() == ""  # no preference pool here: the declared output exists, empty
    assert not list(tmp_path.glob(".world*"))  # no partial directory left behind


def test_the_preference_pool_holds_no_prompt_of_the_sft_data(tmp_path):
    cfg = WorldSection(**{**SMALL.model_dump(), "preference_groups_per_category": 2})
    w = build_world(7, cfg)
    sft_prompts = {row["prompt"][0]["content"] for row in w.sft_rows()}
    assert w.prefs and not {r["instruction"] for r in w.prefs} & sft_prompts
    assert not {r["group_id"] for r in w.prefs} & {r["group_id"] for r in w.train + w.eval}
    assert all(r["instruction"] not in w.corpus for r in w.prefs if r["level"] > 0)
    w.save(tmp_path / "w")
    assert load_instructions(tmp_path / "w" / "prefs.jsonl") == w.prefs
    assert w.metrics()["prefs"]["records"] == len(w.prefs)
    # the train and eval pools do not move when a preference pool is added
    plain = build_world(7, SMALL)
    assert plain.train == w.train and plain.eval == w.eval and not plain.prefs
    plain.save(tmp_path / "p")
    assert not (tmp_path / "p" / "prefs.jsonl").exists()
