"""BMC bridging in the preferences stage: the editor interface, the LLM prompt template, the stored column."""

import random

import pytest

from alignpipe.config import ConfigError, WorldSection, validate_params
from alignpipe.stages import preferences as stage
from alignpipe.llm import prompts
from alignpipe.methods.bmc.bridging import RolesEditor, bridge_pairs, kept_fraction
from alignpipe.prefs.pairs import Candidate, pair_row
from alignpipe.train.pairs import read_pairs
from alignpipe.utils.io import write_jsonl


def test_editor_prompt_is_the_roles_versioned_template_and_filled():
    # What the roles' editor role sends (roles.Editor.edit -> "editor_edit.v2").
    msgs = prompts.render("editor_edit.v2", {"instruction": "Describe Velmora. Use JSON.",
                                             "losing": 'Velmora {"a": 1} is red.', "winning": "Velmora is blue."})
    assert [m["role"] for m in msgs] == ["system", "user"] and "careful editor" in msgs[0]["content"]
    text = msgs[1]["content"]
    assert "### Instruction\nDescribe Velmora. Use JSON." in text
    assert '### LOSING response\nVelmora {"a": 1} is red.' in text  # braces in a response survive
    assert "### WINNING response\nVelmora is blue." in text
    assert text.rstrip().endswith("### Corrected response")


class _Role:
    """A stand-in editor role: edits by replacing 'red' with 'blue'; gives nothing (None) for empty losers."""

    def __init__(self):
        self.calls = []

    def edit(self, instructions, losing, winning, records):
        self.calls.append((list(instructions), list(records)))
        return [lo.replace("red", "blue") if lo else None for lo in losing]


def test_roles_editor_batches_one_call_and_counts_failed_edits():
    role = _Role()
    editor = RolesEditor(role, {"Describe Velmora.": {"id": "r1"}})
    pairs = [{"prompt": [{"role": "user", "content": "Describe Velmora."}],
              "chosen": [{"role": "assistant", "content": "Velmora is blue and old."}],
              "rejected": [{"role": "assistant", "content": lo}], "score_chosen": 1.0} for lo in
             ["Velmora is red and old.", ""]]
    out, stats = bridge_pairs(pairs, editor, score=lambda pair, text: float("blue" in text))
    assert len(role.calls) == 1 and role.calls[0][1] == [{"id": "r1"}, {"id": "r1"}]
    assert out[0]["bridged"][0]["content"] == "Velmora is blue and old."
    assert out[1]["bridged"][0]["content"] == "Velmora is blue and old."  # failed edit: the winner stays
    assert stats["editor_failed"] == 1 and stats["n_bridged"] == 2


def test_roles_editor_over_the_oracle_backend(small_world):
    from alignpipe.llm import build_roles

    world = small_world
    params = validate_params({"seed": 1})
    roles = build_roles(params.roles, seed=1, kb=world.kb, cache_dir=None)
    rec = next(r for r in world.train if r["level"] >= 1)
    winning = world.answers[rec["id"]]
    losing = winning.upper()
    editor = RolesEditor(roles.editor, {rec["instruction"]: rec})
    assert isinstance(editor.edit(rec["instruction"], losing, winning), str)
    assert roles.metrics()["editor"]["calls"] == 1


def test_kept_fraction():
    assert kept_fraction("a b c d", "a b x d") == 0.75
    assert kept_fraction("a b", "c d") == 0.0


@pytest.fixture(scope="module")
def small_world():
    from alignpipe.world import build_world

    return build_world(3, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1))


def test_stage_bridge_adds_a_compatible_column(small_world, tmp_path):
    from alignpipe.world import Oracle

    world = small_world
    world.save(tmp_path / "world")
    oracle, rng = Oracle(world.kb), random.Random(0)
    records = [r for r in world.train if r["level"] >= 1][:12]
    pairs = []
    for r in records:
        bad = oracle.corrupt(r, [rng.randrange(r["level"])], rng)
        pairs.append(pair_row(r, Candidate(world.answers[r["id"]], 1.0, "oracle"), Candidate(bad, 0.2, "policy"), 0))
    params = validate_params({"preferences": {"bridging": {"enabled": True}}})
    out, stats = stage.bridge(params, records, pairs, tmp_path / "world")
    assert stats["n_bridged"] == len(pairs) and 0 < stats["kept_losing_words_mean"] <= 1
    for before, after in zip(pairs, out):
        assert {k: after[k] for k in before} == before  # nothing existing changes
        assert after["bridged"][0]["role"] == "assistant" and after["score_bridged"] >= after["score_rejected"]
    write_jsonl(tmp_path / "pairs.jsonl", out)
    rows, _ = read_pairs(tmp_path / "pairs.jsonl")
    assert [r["chosen"] for r in rows] == [p["chosen"] for p in out if p["chosen"] != p["rejected"]]
    bridged_rows, _ = read_pairs(tmp_path / "pairs.jsonl", chosen_field="bridged")
    assert all(r["chosen"] == p["bridged"] for r, p in zip(bridged_rows, out))


def test_bridging_never_invalidates_the_sample_cache():
    a = stage.sample_cache_key({"seed": 1, "preferences": {"num_samples": 2, "bridging": {"enabled": True}}})
    b = stage.sample_cache_key({"seed": 1, "preferences": {"num_samples": 2, "bridging": {"enabled": False}}})
    assert a == b == {"seed": 1, "preferences": {"num_samples": 2}}


def test_bridging_config_is_strict():
    with pytest.raises(ConfigError, match="preferences.bridging.editor"):
        validate_params({"preferences": {"bridging": {"editor": "gpt"}}})
    with pytest.raises(ConfigError, match="unknown key 'preferences.bridging.enable'"):
        validate_params({"preferences": {"bridging": {"enable": True}}})
