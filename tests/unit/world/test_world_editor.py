"""The oracle editor (BMC bridging): the bridged response fixes what the losing one got wrong and keeps the rest."""

import random

import pytest

from alignpipe.methods.bmc.bridging import kept_fraction
from alignpipe.world import verify
from alignpipe.world.editor import WorldEditor, apply, hunks, pieces


@pytest.fixture(scope="module")
def editor(world):
    return WorldEditor(world.kb, world.train)


def test_pieces_round_trip_and_hunks():
    text = "Velmora was founded in 1203. It has a harbor, a market!"
    assert "".join(pieces(text)) == text
    lose, win = pieces("A b c d."), pieces("A x c d e.")
    hs = hunks(lose, win)
    assert apply(lose, hs) == "A x c d e." and apply(lose, []) == "A b c d."
    assert apply(lose, hs[:1]) == "A x c d."


def test_all_hunks_give_the_winner_exactly(world, oracle):
    rng = random.Random(3)
    for r in world.train[::37][:30]:
        winning = world.answers[r["id"]]
        losing = oracle.wrong(r, rng.choice(["wrong_fact", "repeat", "truncate", "off_topic"]), rng)
        lose = pieces(losing)
        assert apply(lose, hunks(lose, pieces(winning))) == winning
        assert apply(lose, []) == losing


def test_bridged_fixes_violated_constraints_and_keeps_losing_text(world, oracle, editor, judge):
    rng = random.Random(0)
    records = [r for r in world.train if r["level"] >= 2][::7][:40]
    kept, gained = [], 0
    for r in records:
        winning = world.answers[r["id"]]
        losing = oracle.corrupt(r, [rng.randrange(r["level"])], rng)
        lose_ok, win_ok = verify(r, losing), verify(r, winning)
        if sum(lose_ok) >= sum(win_ok):
            continue  # the corruption could not break its constraint without breaking none
        bridged = editor.edit(r["instruction"], losing, winning)
        ok = verify(r, bridged)
        assert sum(ok) > sum(lose_ok), (r["id"], losing, bridged)
        assert all(o for o, w in zip(ok, win_ok) if w)  # everything the winner satisfies
        scores, win_scores = judge.score(r, bridged), judge.score(r, winning)
        assert all(scores[d] >= win_scores[d] for d in scores)
        assert bridged != losing
        kept.append(kept_fraction(losing, bridged))
        gained += 1
    assert gained >= 20
    assert sum(kept) / len(kept) > 0.85  # the losing response's words mostly stay


def test_keeps_correct_paraphrase_and_fixes_wrong_fact(world, oracle, editor, judge):
    """Losing: a correct fact in another wording + a wrong value. Bridged: that wording kept, the value fixed."""
    kb = world.kb
    record = next(r for r in world.train if r["level"] == 0 and r["family"] == "describe"
                  and len(r["task"]["attributes"]) >= 2)
    eid = record["entity_ids"][0]
    a1, a2 = record["task"]["attributes"][:2]
    winning = oracle.answer(record)
    right1, right2 = kb.fact(eid, a1), kb.fact(eid, a2)
    assert right1 in winning and right2 in winning
    wrong_value = oracle.wrong_value(eid, a2, random.Random(1))
    losing = winning.replace(right1, kb.fact(eid, a1, template=1)).replace(right2, kb.fact(eid, a2, value=wrong_value))
    assert judge.score(record, losing)["factuality"] < judge.score(record, winning)["factuality"]
    bridged = editor.edit(record["instruction"], losing, winning)
    assert kb.fact(eid, a1, template=1) in bridged  # the losing response's own (correct) wording survives
    assert right2 in bridged and wrong_value not in bridged.replace(kb.value(eid, a2), "")
    assert judge.score(record, bridged)["factuality"] >= judge.score(record, winning)["factuality"]
    assert bridged != winning


def test_unknown_prompt_fails(editor):
    with pytest.raises(KeyError, match="no instruction record"):
        editor.edit("Tell me a joke.", "a", "b")
