"""Lion: the referee's position-swapped averaging and the hard/easy split (hand-computed), the relative score, the
generation filters (ROUGE-L, length, the word "instruction"), the oracle generator on a tiny world, and the rounds
in the synthesize stage: artifacts per round, determinism, resume after a killed round, the hf backend."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from alignpipe.config import ArchitectureSection, LionSection, TokenizerSection, validate_params
from alignpipe.llm.base import WORK_COUNTERS, Completion
from alignpipe.llm.client import RoleClient
from alignpipe.llm.roles import Generator, Referee
from alignpipe.methods.lion import pool as lion
from alignpipe.methods.lion import rounds as lion_stage
from alignpipe.stages import synthesize as stage
from alignpipe_ops import runlog

# ---- discrimination ------------------------------------------------------------------------------------------


class PositionBiasedReferee:
    """A referee backend with a fixed quality per answer text and +1 for whichever answer is shown first."""

    kind, remote, batched = "scripted-referee", False, True

    def __init__(self, quality: dict[str, float]):
        self.quality = quality

    def identity(self):
        return {"kind": self.kind}

    def describe(self):
        return "position-biased referee"

    def complete_batch(self, requests):
        out = []
        for r in requests:
            a1, a2 = self.quality[r.fields["answer_1"]] + 1, self.quality[r.fields["answer_2"]]
            out.append(Completion(text=f"Evaluation evidence: ok\nScore of the Assistant 1: {a1}\n"
                                       f"Score of the Assistant 2: {a2}"))
        return out


def _referee(quality):
    return Referee("referee", RoleClient("referee", PositionBiasedReferee(quality)), 0.2, 64, seed=0)


def test_swapped_scores_are_averaged_and_split_by_threshold():
    quality = {"T": 8.0, "s_close": 7.5, "s_bad": 3.0, "s_equal": 8.0}
    items = [lion.item(f"i{k}", f"Describe thing {k}.") for k in range(3)]
    rows = lion.score(_referee(quality), items, ["T", "T", "T"], ["s_close", "s_bad", "s_equal"], threshold=1.0)
    # Teacher first: (9, 7.5); student first: (8.5, 8) -> teacher (9 + 8) / 2 = 8.5, student (7.5 + 8.5) / 2 = 8.0.
    # The first order alone would give a gap of 1.5 (hard); averaged, the bias cancels: 0.5 < 1 -> easy.
    assert (rows[0]["teacher_score"], rows[0]["student_score"], rows[0]["label"]) == (8.5, 8.0, "easy")
    # (9, 3) and (4, 8): teacher 8.5, student 3.5 -> gap 5 -> hard.
    assert (rows[1]["teacher_score"], rows[1]["student_score"], rows[1]["label"]) == (8.5, 3.5, "hard")
    assert (rows[2]["teacher_score"], rows[2]["student_score"], rows[2]["label"]) == (8.5, 8.5, "easy")
    assert lion.split(rows) == (["i1"], ["i0", "i2"])
    # The threshold is inclusive: a gap of exactly 0.5 is hard at threshold 0.5.
    assert lion.score(_referee(quality), items[:1], ["T"], ["s_close"], threshold=0.5)[0]["label"] == "hard"
    m = lion.score_metrics(rows)
    assert m["hard"] == 1 and m["easy"] == 2 and m["hard_ratio"] == round(1 / 3, 4)
    assert m["mean_teacher_score"] == 8.5 and m["mean_student_score"] == round((8.0 + 3.5 + 8.5) / 3, 4)
    assert m["relative_score"] == round(100 * 20.0 / 25.5, 2)  # Lion's Table 1: sum(student) / sum(teacher)


def test_unparseable_referee_output_leaves_the_item_unscored():
    class Garbled(PositionBiasedReferee):
        def complete_batch(self, requests):
            return [Completion(text="I cannot decide.") for _ in requests]

    referee = Referee("referee", RoleClient("referee", Garbled({})), 0.2, 64, seed=0)
    rows = lion.score(referee, [lion.item("i0", "Describe it.")], ["T"], ["S"], threshold=1.0)
    assert rows[0]["label"] == "unscored" and lion.split(rows) == ([], [])
    assert lion.score_metrics(rows)["unscored"] == 1 and lion.relative_score(rows) is None
    assert referee.stats.unparseable == 2  # both orders counted


# ---- generation filters --------------------------------------------------------------------------------------


def test_reject_reasons_rouge_length_and_the_word_instruction():
    cfg = LionSection()
    pool = lion.RougeFilter(["Describe the old harbor town of Velmora.", "one two three four five six seven eight "
                                                                        "nine ten"])
    assert lion.reject_reason(None, pool, cfg) == "unparseable"
    assert lion.reject_reason("Describe it now.", pool, cfg) == "too_short"  # 3 words (Lion rejects <= 3)
    assert lion.reject_reason("Follow this Instruction about Velmora carefully.", pool, cfg) == "instruction_word"
    # LCS 6 of 7 tokens each way: F1 = 6/7 = 0.857 > 0.7.
    assert pool.max_score("Describe the old harbor town of Quenth.") == pytest.approx(6 / 7)
    assert lion.reject_reason("Describe the old harbor town of Quenth.", pool, cfg) == "rouge"
    # LCS 7 of 10: F1 = 0.7 exactly, which is not above the threshold: kept.
    assert pool.max_score("one two three four five six seven x y z") == pytest.approx(0.7)
    assert lion.reject_reason("one two three four five six seven x y z", pool, cfg) is None
    assert lion.reject_reason("List three facts about the river Quenth.", pool, cfg) is None


class EchoGenerator:
    """A generator backend that returns scripted texts in turn (for the accept / reject / retry loop)."""

    kind, remote, batched = "scripted-generator", False, True

    def __init__(self, texts):
        self.texts = list(texts)

    def identity(self):
        return {"kind": self.kind}

    def describe(self):
        return "scripted generator"

    def complete_batch(self, requests):
        return [Completion(text=self.texts.pop(0)) for _ in requests]


def test_generate_retries_rejected_ones_within_the_budget_and_dedups_new_against_new():
    texts = ["Describe the old harbor town of Quenth.",  # near-copy of the pool
             "Name two rivers that flow near Velmora today.",  # accepted
             "Name two rivers that flow near Velmora today.",  # now a copy of the one just accepted
             "",  # unparseable
             "Ok then.",  # too short
             "Which festival is held in Arlis each spring?"]  # accepted
    gen = Generator("generator", RoleClient("generator", EchoGenerator(texts)), 1.0, 64, seed=0)
    seeds = [lion.item("s0", "Describe the old harbor town of Velmora."), lion.item("s1", "List facts about Arlis.")]
    rouge = lion.RougeFilter([s["instruction"] for s in seeds])
    new, rejected, stats = lion.generate(gen, seeds, 2, True, rouge, LionSection(max_attempts=3), random.Random(0), 1)
    assert [x["instruction"] for x in new] == [texts[1], texts[5]]
    assert [x["id"] for x in new] == ["lion-r1-hard-00000", "lion-r1-hard-00001"]
    assert all(x["origin"] == "hard" and x["round"] == 1 and x["parent"] in {"s0", "s1"} for x in new)
    assert [r["reason"] for r in rejected] == ["rouge", "rouge", "unparseable", "too_short"]
    assert stats == {"seeds": 2, "wanted": 2, "calls": 6, "accepted": 2, "rejected_unparseable": 1,
                     "rejected_too_short": 1, "rejected_instruction_word": 0, "rejected_rouge": 2}
    # The budget caps the calls: max_attempts 1 -> 2 calls for 2 wanted, however many are rejected.
    gen = Generator("generator", RoleClient("generator", EchoGenerator(["Ok.", "Ok."])), 1.0, 64, seed=0)
    _, _, stats = lion.generate(gen, seeds, 2, True, lion.RougeFilter(), LionSection(max_attempts=1),
                                random.Random(0), 1)
    assert stats["calls"] == 2 and stats["accepted"] == 0
    assert lion.generate(gen, [], 5, False, lion.RougeFilter(), LionSection(), random.Random(0), 1)[2]["calls"] == 0


# ---- the oracle roles on a tiny world -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir(world_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with a BPE tokenizer of the world corpus (the student's start)."""
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("base")
    tok = train_tokenizer((world_dir / "corpus.txt").read_text().splitlines(),
                          TokenizerSection(vocab_size=400, min_frequency=1))
    arch = ArchitectureSection(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=2, max_position_embeddings=256)
    build_model(arch, tok, seed=0).save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out


def test_oracle_generator_keeps_the_family_for_hard_and_changes_it_for_easy(world_dir):
    from alignpipe.llm import build_roles
    from alignpipe.world import load_kb, verify

    roles = build_roles(validate_params({}).roles, 5, kb=load_kb(world_dir / "kb.json"))
    seeds = [x for x in lion.load_world_pool(world_dir / "train.jsonl") if x["record"]["category"] != "example"][:6]
    cfg = LionSection(rouge_threshold=1.0)  # keep every parseable one: this checks what the oracle writes
    for hard in (True, False):
        new, _, stats = lion.generate(roles.generator, seeds, 6, hard, lion.RougeFilter(), cfg, random.Random(1), 1)
        assert stats["accepted"] == 6
        parents = {s["id"]: s["record"] for s in seeds}
        for x in new:
            rec, parent = x["record"], parents[x["parent"]]
            assert (rec["category"], rec["level"]) == (parent["category"], parent["level"])
            assert (rec["family"] == parent["family"]) is hard
            assert all(verify(rec, roles.teacher.answer([x["instruction"]], [rec])[0]))


def _lion_params(rounds: int = 2, **extra) -> dict:
    lion_cfg = {"rounds": rounds, "max_prompts": 12, "new_hard": 3, "new_easy": 3, "eval_prompts": 6,
                "max_new_tokens": 16, "max_length": 160,
                "trainer": {"max_steps": 3, "per_device_train_batch_size": 4, "save_steps": 1}, **extra}
    return {"seed": 5, "synthesize": {"webr": {"enabled": False}, "lion": lion_cfg}}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_rounds_write_their_artifacts_and_metrics_from_real_scores(world_dir, base_dir, tmp_path):
    params = validate_params(_lion_params())
    m = stage.run(params, world_dir, tmp_path / "out", base_dir)
    out = tmp_path / "out"
    rounds = json.loads((out / "lion" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2] and m["lion"]["rounds"] == rounds
    for r in (1, 2):
        d = out / "lion" / f"round_{r}"
        for f in ("imitation/pool.jsonl", "imitation/teacher.jsonl", "imitation/train.jsonl",
                  "imitation/student/model/model.safetensors", "discrimination/scores.jsonl",
                  "discrimination/hard.jsonl", "discrimination/easy.jsonl", "discrimination/eval_scores.jsonl",
                  "generation/generated.jsonl", "generation/rejected.jsonl", "generation/pool.jsonl"):
            assert (d / f).is_file(), f
        scores = _read(d / "discrimination" / "scores.jsonl")
        # Every label follows from its averaged scores and the threshold; the metrics from the rows.
        for s in scores:
            assert s["label"] == ("hard" if s["teacher_score"] - s["student_score"] >= 1.0 else "easy")
        assert {x["id"] for x in _read(d / "discrimination" / "hard.jsonl")} == {
            s["id"] for s in scores if s["label"] == "hard"}
        disc = rounds[r]["discrimination"]
        assert disc == {**lion.score_metrics(scores), "eval": disc["eval"]}
        assert disc["eval"] == lion.score_metrics(_read(d / "discrimination" / "eval_scores.jsonl"))
        assert rounds[r]["eval_relative_score"] == disc["eval"]["relative_score"] is not None
        assert 0 < disc["relative_score"] <= 100 and disc["mean_teacher_score"] == 10.0  # the oracle is perfect
        assert rounds[r]["imitation"]["student"]["steps"] == 3
        # The pool grows by what generation accepted; the next round trains on it.
        pool = _read(d / "imitation" / "pool.jsonl")
        assert len(_read(d / "generation" / "pool.jsonl")) == len(pool) + rounds[r]["generation"]["new"]
    assert len(_read(out / "lion" / "round_2" / "imitation" / "pool.jsonl")) == 12 + rounds[1]["generation"]["new"]
    assert rounds[1]["generation"]["new"] > 0
    # Final data: the whole final pool with the teacher's answers, in both formats; sft reads it.
    from alignpipe.train.sft import load_sft_data

    rows = _read(out / "lion.jsonl")
    assert len(rows) == m["lion"]["rows"] == 12 + rounds[1]["generation"]["new"] + rounds[2]["generation"]["new"]
    assert all(set(r) == {"prompt_id", "messages"} for r in rows)
    assert len(load_sft_data([out / "sft_lion.jsonl"])) == len(rows)
    counters = m["lion"]["roles_by_round"]
    assert counters["0"]["teacher"]["calls"] == 6 and counters["0"]["referee"]["calls"] == 2 * 6
    assert counters["1"]["generator"]["calls"] >= 3


def test_resume_after_a_killed_round_gives_the_same_outputs(world_dir, base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "synthesize")  # the run records' file
    params = validate_params(_lion_params())
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work-a"))
    stage.run(params, world_dir, tmp_path / "straight", base_dir)

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work-b"))
    real = lion_stage.discrimination

    def killed(ctx, roles, round_):
        if round_ == 2:
            raise KeyboardInterrupt("killed in round 2's discrimination")
        return real(ctx, roles, round_)

    monkeypatch.setattr(lion_stage, "discrimination", killed)
    with pytest.raises(KeyboardInterrupt):
        stage.run(params, world_dir, tmp_path / "resumed", base_dir)
    assert not (tmp_path / "resumed").exists()  # nothing complete-looking was written
    done = sorted(p.relative_to(tmp_path / "work-b").as_posix() for p in (tmp_path / "work-b").glob("*/*/round_*/*"))
    assert [d.split("/", 2)[2] for d in done] == ["round_0/baseline", "round_1/discrimination", "round_1/generation",
                                                  "round_1/imitation", "round_2/imitation"]
    monkeypatch.setattr(lion_stage, "discrimination", real)
    m = stage.run(params, world_dir, tmp_path / "resumed", base_dir)
    # The rerun read the finished phases back and redid only round 2's discrimination and what follows (its run
    # record says so): no teacher call before the final answers.
    phases = [r for r in runlog.read("synthesize", tmp_path / "work-b" / "runs") if r["event"] == "lion_phase"]
    killed, rerun = phases[:5], phases[5:]
    assert not any(r["reused"] for r in killed)
    assert [(r["phase"], r["reused"]) for r in rerun] == [
        ("round_0/baseline", True), ("round_1/imitation", True), ("round_1/discrimination", True),
        ("round_1/generation", True), ("round_2/imitation", True), ("round_2/discrimination", False),
        ("round_2/generation", False), ("round_2/final", False)]
    asked = sum(r["roles"]["teacher"]["calls"] for r in rerun)
    assert asked == m["lion"]["rounds"][2]["generation"]["new"]  # only the final answers
    # metrics.json holds each phase's role work as its artifact stored it: equal to the uninterrupted run's.
    used = m["lion"]["roles_by_round"]
    assert used["0"]["teacher"]["calls"] == 6 and used["1"]["teacher"]["calls"] > 0
    for name in ("lion.jsonl", "sft_lion.jsonl", "lion/rounds.json", "lion/round_2/discrimination/scores.jsonl",
                 "lion/round_2/imitation/student/model/model.safetensors", "metrics.json",
                 "lion/round_1/imitation/roles.json"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_hf_teacher_and_generator_through_the_same_code_rerun_makes_no_request(world_dir, base_dir, tiny_model_dir,
                                                                                 tmp_path, monkeypatch):
    hf = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 8, "max_tokens": 12}
    raw = _lion_params(rounds=1, min_words=1, rouge_threshold=1.0)
    raw["roles"] = {"teacher": hf, "generator": hf, "cache_dir": str(tmp_path / "llm-cache")}
    params = validate_params(raw)
    monkeypatch.setenv("DVC_STAGE", "synthesize")
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work-1"))
    m = stage.run(params, world_dir, tmp_path / "a", base_dir)
    # Requests, cache hits and tokens depend on what the cache held: the run record has them, not metrics.json.
    (usage,) = [r["counters"] for r in runlog.read("synthesize", tmp_path / "work-1" / "runs") if r["event"] == "roles"]
    assert usage["teacher"]["requests"] > 0 and usage["teacher"]["completion_tokens"] > 0
    assert m["roles"]["generator"]["calls"] > 0 and m["roles"]["referee"]["calls"] > 0  # the oracle referee scored
    assert set(m["roles"]["teacher"]) == set(WORK_COUNTERS) == {"calls", "unparseable", "refusals"}
    # A rerun in a fresh work dir recomputes every phase, and every hf answer comes from the disk cache.
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work-2"))
    m2 = stage.run(params, world_dir, tmp_path / "b", base_dir)
    (usage2,) = [r["counters"] for r in runlog.read("synthesize", tmp_path / "work-2" / "runs")
                 if r["event"] == "roles"]
    assert usage2["teacher"]["requests"] == usage2["generator"]["requests"] == 0  # the oracle is computed
    assert usage2["teacher"]["cache_hits"] == usage["teacher"]["calls"]
    assert usage2["generator"]["cache_hits"] == usage["generator"]["calls"]
    for name in ("lion.jsonl", "metrics.json"):  # the same bytes, however warm the cache was
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bad_lion_params_and_inputs_fail_early(tmp_path):
    from alignpipe.config import ConfigError
    from alignpipe.utils.io import DataError

    with pytest.raises(ConfigError, match=r"synthesize.lion.threshold = 0: .*greater than 0"):
        validate_params({"synthesize": {"lion": {"threshold": 0}}})
    with pytest.raises(ConfigError, match=r"synthesize.lion.trainer.seed = 3: set by the pipeline"):
        validate_params({"synthesize": {"lion": {"trainer": {"seed": 3}}}})
    with pytest.raises(ConfigError, match=r"unknown key 'synthesize.lion.round'"):
        validate_params({"synthesize": {"lion": {"round": 2}}})
    with pytest.raises(ConfigError, match=r"'lion' needs synthesize.lion.enabled"):
        validate_params({"sft": {"data": ["seed", "lion"]}, "synthesize": {"lion": {"enabled": False}}})
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"instruction": "Describe Velmora.", "input": ""}\n{"prompt": "no instruction"}\n')
    with pytest.raises(DataError, match=r"pool.jsonl line 2: missing field 'instruction'"):
        lion.load_instruction_file(bad)
    good = tmp_path / "pool.json"
    good.write_text(json.dumps([{"instruction": "Summarize the text.", "input": "Velmora is a town."}]))
    assert lion.load_instruction_file(good)[0]["instruction"] == "Summarize the text.\n\nVelmora is a town."
