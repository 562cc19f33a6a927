"""LTE parts: world edits vs the KB, KnowEdit loading, the template and mixture, BM25 retrieval, metrics."""

from __future__ import annotations

import json
import math

import pytest

from alignpipe.methods.lte import metrics as M
from alignpipe.methods.lte.records import load_knowedit, normalize, read_edits
from alignpipe.methods.lte.retrieve import EditStore
from alignpipe.methods.lte.template import HEADER, alignment_rows, mix_counts, render
from alignpipe.utils.io import DataError
from alignpipe.world.edits import HOPS, make_edits
from alignpipe.world.kb import ATTR_TYPE, ATTRIBUTES, generate_kb


@pytest.fixture(scope="module")
def kb():
    return generate_kb(1234, 48)


@pytest.fixture(scope="module")
def edits(kb):
    return make_edits(kb, 1234, n_train=40, n_eval=60)


def test_world_edits_are_consistent_with_the_kb(kb, edits):
    facts = {split: {(kb.find(e["subject"]).id, e["relation"]) for e in rows} for split, rows in edits.items()}
    assert len(edits["train"]) == 40 and len(edits["eval"]) == 60
    assert not facts["train"] & facts["eval"]  # disjoint facts
    n_port = 0
    for split, rows in edits.items():
        for e in rows:
            ent = kb.find(e["subject"])
            # the old object is the KB's, the new one differs and is in the attribute's domain
            assert e["ground_truth"] == [kb.value(ent.id, e["relation"])]
            assert e["target_new"] != e["ground_truth"][0]
            spec = ATTRIBUTES[ATTR_TYPE[e["relation"]]][e["relation"]]
            if spec[0] == "ref":
                new_city = kb.find(e["target_new"])
                assert new_city is not None and new_city.type == "city" and new_city.id != ent.id
            elif spec[0] == "vocab":
                assert e["target_new"] in map(str, spec[1])
            else:
                assert spec[1] <= int(e["target_new"]) <= spec[2]
            assert e["target_new"] in e["fact"] and e["subject"] in e["fact"]
            # portability follows from the KB: the new city's fact, through the ref attribute
            for q in e["portability"].get("Reasoning", []):
                n_port += 1
                assert e["relation"] in HOPS
                new_city = kb.find(e["target_new"])
                values = [kb.value(new_city.id, a) for a in kb.attributes(new_city.id)]
                assert q["ground_truth"][0] in values
                old_city = kb.get(ent.attributes[e["relation"]])
                attr = kb.attributes(new_city.id)[values.index(q["ground_truth"][0])]
                assert kb.value(old_city.id, attr) != q["ground_truth"][0]  # the edit changes the answer
                assert (new_city.id, attr) not in facts[split]  # the hop fact itself is not edited
            # locality: untouched facts, answered by the KB
            for kind, qs in e["locality"].items():
                for q in qs:
                    (eid, attr), = [(x.id, a) for x in kb.entities for a in kb.attributes(x.id)
                                    if q["answer"] == kb.fact(x.id, a)]
                    assert (eid, attr) not in facts[split]
                    assert q["ground_truth"] == [kb.value(eid, attr)]
                    assert (eid == ent.id) == (kind == "Relation_Specificity")
    assert n_port > 0
    assert make_edits(kb, 1234, n_train=40, n_eval=60) == edits  # seeded
    with pytest.raises(ValueError, match="KB has 192"):
        make_edits(kb, 1234, n_train=100, n_eval=100)


def test_knowedit_samples_load_and_normalize(shared_data):
    zsre = load_knowedit(shared_data / "knowedit" / "ZsRE-test-all.json")
    cf = load_knowedit(shared_data / "knowedit" / "wiki_counterfact-train_cf.json")
    assert len(zsre) == 1304 and len(cf) == 1428
    assert zsre[0]["target_new"] == "Noctuidae" and zsre[0]["ground_truth"] == ["Aspidoceratidae"]
    assert zsre[0]["fact"] == "Which family does Epaspidoceras belong to? Noctuidae"
    assert cf[0]["ground_truth"] == ["France"] and cf[0]["rephrase_prompt"] is None  # string -> list; absent
    assert set(cf[0]["portability"]) == {"Reasoning", "Subject_Aliasing"}
    for rows in (zsre, cf):
        for r in rows:
            for scope in ("portability", "locality"):
                assert all(q["prompt"] and q["ground_truth"] for qs in r[scope].values() for q in qs)


def test_knowedit_errors_name_file_and_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"subject": "A", "prompt": "Q?", "target_new": "x", "ground_truth": ["y"]},
                               {"subject": "B", "prompt": "Q?", "ground_truth": ["y"]}]))
    with pytest.raises(DataError, match=r"bad.json record 1: field 'target_new'"):
        load_knowedit(bad)
    bad.write_text(json.dumps({"subject": "A"}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_knowedit(bad)
    bad.write_text(json.dumps([{"subject": "A", "prompt": "Q?", "target_new": "x",
                                "locality": {"RS": [{"ground_truth": "y"}]}}]))
    with pytest.raises(DataError, match=r"record 0: locality.RS\[0\]: needs a string 'prompt'"):
        load_knowedit(bad)
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps(normalize({"subject": "A", "prompt": "Q?", "target_new": "x"}, "w", "e1")) + "\n"
                     + json.dumps({"subject": 3}) + "\n")
    with pytest.raises(DataError, match=r"eval.jsonl line 2: field 'subject'"):
        read_edits(jsonl)


def test_template_matches_lte():
    assert render(["A is B."], "Q?") == f"{HEADER}\n\n[Updated Information]:\nA is B.\n\n[Question]:\nQ?"
    assert render(["A.", "B."], "Q?").endswith("[Updated Information]:\n1. A.\n2. B.\n\n[Question]:\nQ?")
    assert render([], "Q?") == "Q?"
    assert HEADER == ("Please acknowledge the updated information provided below and respond to the subsequent "
                      "question.")


def test_mixture_proportions_and_answers(edits):
    rows, stats = alignment_rows(edits["train"], seed=3)
    assert mix_counts(40) == [20, 10, 10] and mix_counts(7) == [4, 2, 1]
    assert stats["edits_by_distractors"] == {"0": 20, "1": 10, "2": 10} and stats["short_of_distractors"] == 0
    by_id = {e["id"]: e for e in edits["train"]}
    facts_of = {}
    for r in rows:
        e = by_id[r["edit_id"]]
        user, answer = r["prompt"][0]["content"], r["completion"][0]["content"]
        if r["scope"] == "locality_plain":
            assert r["n_facts"] == 0 and HEADER not in user
        else:
            assert user.startswith(HEADER) and e["fact"] in user.split("[Question]:")[0]
            facts_of.setdefault(e["id"], r["n_facts"])
            assert facts_of[e["id"]] == r["n_facts"]  # one fact block per edit
            block = user.split("[Updated Information]:\n")[1].split("\n\n[Question]")[0]
            # distractors come from other subjects
            others = [f for f in (block.split("\n") if r["n_facts"] > 1 else []) if e["fact"] not in f]
            assert all(e["subject"] not in f for f in others) and len(others) == r["n_facts"] - 1
        if r["scope"] in ("prompt", "rephrase"):
            assert e["target_new"] in answer  # in scope: the new fact
        elif r["scope"] == "portability":
            assert answer == e["portability"]["Reasoning"][0]["answer"]
        else:  # out of scope: unchanged
            assert any(q["ground_truth"][0] in answer for q in e["locality"][next(iter(e["locality"]))] +
                       sum(e["locality"].values(), []))
    counts = {n: sum(1 for v in facts_of.values() if v == n) for n in (1, 2, 3)}
    assert counts == {1: 20, 2: 10, 3: 10}
    assert alignment_rows(edits["train"], seed=3)[0] == rows  # seeded


def test_retriever_returns_the_right_edit():
    store = EditStore(["Velmora lies in the south.", "Drava flows through Kesk.", "Orin invented the lamp.",
                       "Velmora was founded in 1203."])
    assert store.search("Which city does Drava flow through?", k=1) == [1]
    assert store.search("What did Orin invent?", k=1) == [2]
    assert store.search("When was Velmora founded?", k=2) == [3, 0]
    assert store.search("When was Velmora founded?", k=1, exclude={3}) == [0]
    assert len(store.search("anything", k=10)) == 4
    assert EditStore(["Orin invented the lamp."]).search("Where does Drava start?", k=3) == [0]


def test_metrics_against_hand_computed_values():
    assert M.contains_answer("Velmora lies in the South.", ["south"])
    assert not M.contains_answer("Velmora lies in the southern hills.", ["south"])
    assert M.contains_answer("Franche-Comté, of course", ["Franche-Comté"])
    assert M.same_answer("Krapol lives in the caves.", "krapol lives in the caves")
    assert not M.same_answer("Krapol lives in the sea.", "Krapol lives in the caves.")
    assert M.agreement("Krapol lives in the sea.", "krapol lives in the caves") == 4 / 5  # sea != caves
    assert M.agreement("Krapol lives.", "Krapol lives in the caves.") == 2 / 5
    assert M.agreement("", "") == 1.0 and M.agreement("x", "") == 0.0
    # "a b a b": bigrams ab, ba, ab -> p = (2/3, 1/3), H2 = 0.918296; trigrams aba, bab -> H3 = 1;
    # (2/3 * 0.918296 + 4/3 * 1) / 2 = 0.972765
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert M.ngram_entropy("a b a b") == pytest.approx(0.972765, abs=1e-6)
    # 4 distinct tokens ("x y z ."): 3 distinct bigrams -> log2 3, 2 trigrams -> 1
    assert M.ngram_entropy("x y z.") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3) / 2)
    assert M.ngram_entropy("word") == 0.0
    assert M.fluency(["a b a b", "word"]) == pytest.approx(0.972765 / 2, abs=1e-6)
    assert math.isnan(M.fluency([])) and math.isnan(M.mean([]))


@pytest.mark.parametrize("raw, message", [
    ({"edit_eval": {"top_k": 0}}, "edit_eval.top_k = 0"),
    ({"edit_eval": {"sizes": [10, 10]}}, "edit_eval.sizes = [10, 10]: must be a non-empty list without repeats"),
    ({"edit_eval": {"modes": ["stream"]}}, "edit_eval.modes.0 = 'stream'"),
    ({"edit_align": {"mix": [0.6, 0.25, 0.25]}}, "edit_align.mix = [0.6, 0.25, 0.25]: must be non-negative shares"),
    ({"edit_align": {"trainer": {"max_length": 8}}}, "edit_align.trainer.max_length = 8: set by the pipeline"),
    ({"edit_align": {"peft": "qlora"}}, "edit_align.peft = 'qlora'"),
    ({"edits": {"n_eval": 5, "eval_files": ["x.json"]}}, "train_files / eval_files are for source 'knowedit'"),
    ({"edits": {"sorce": "world"}}, "unknown key 'edits.sorce' (did you mean 'source'?)"),
])  # fmt: skip
def test_lte_params_fail_naming_the_key(raw, message):
    from alignpipe.config import ConfigError, validate_params

    with pytest.raises(ConfigError) as err:
        validate_params(raw)
    assert message in str(err.value)
