"""A training stage SIGKILLed mid-run resumes from its last checkpoint: steps before it are not redone (the run
record says so) and the outputs are byte-identical to an uninterrupted run's."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alignpipe.stages import base as stage
from alignpipe_ops import runlog

pytestmark = pytest.mark.fault
REPO = Path(__file__).resolve().parents[3]

# Runs the base stage and SIGKILLs its own process when step KILL_AT+1 begins: checkpoint-KILL_AT is complete,
# step KILL_AT+1's work is lost, nothing gets a chance to clean up (no exception handler, no atexit).
_VICTIM = """
import json, os, signal, sys
from transformers import TrainerCallback
from alignpipe.config import validate_params
from alignpipe.models import pretrain
from alignpipe.stages import base as stage
from alignpipe.models.training import resume_train

raw, world, out, kill_at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

class Die(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

def with_kill(trainer, output_dir, what):
    trainer.add_callback(Die())
    return resume_train(trainer, output_dir, what)

pretrain.resume_train = with_kill
stage.run(validate_params(raw), world, out)
"""


def test_sigkilled_pretraining_resumes_at_its_checkpoint(helpers, world_dir, tmp_path, monkeypatch):
    params = helpers.make_params()  # 12 steps, a checkpoint every 4
    raw = params.model_dump(mode="json", include={"seed", "base"})
    work = tmp_path / "work-killed"
    env = {**os.environ, "ALIGNPIPE_WORK_DIR": str(work), "PYTHONPATH": str(REPO / "src"), "DVC_STAGE": "base"}
    proc = subprocess.run([sys.executable, "-c", _VICTIM, json.dumps(raw), str(world_dir), str(tmp_path / "out"),
                           "9"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # nothing complete-looking: the output dir is renamed in at the end
    assert [r["event"] for r in runlog.read("base", work / "runs")] == []  # killed before any record

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(work))
    monkeypatch.setenv("DVC_STAGE", "base")
    stage.run(params, world_dir, tmp_path / "out")
    (train,) = [r for r in runlog.read("base", work / "runs") if r["event"] == "train"]
    assert (train["resumed_from_step"], train["steps_run"], train["max_steps"]) == (8, 4, 12)
    assert train["resumed_from"].endswith("checkpoint-8")

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work-straight"))
    stage.run(params, world_dir, tmp_path / "straight")
    (straight,) = runlog.read("base", tmp_path / "work-straight" / "runs")
    assert (straight["resumed_from_step"], straight["steps_run"]) == (0, 12)
    for path in sorted(p for p in (tmp_path / "straight").rglob("*") if p.is_file()):
        assert path.read_bytes() == (tmp_path / "out" / path.relative_to(tmp_path / "straight")).read_bytes(), path

    stage.run(params, world_dir, tmp_path / "again")  # a rerun of a finished run trains nothing
    again = runlog.read("base", tmp_path / "work-straight" / "runs")[-1]
    assert (again["resumed_from_step"], again["steps_run"]) == (12, 0)


def test_a_checkpoint_whose_state_file_a_kill_tore_is_not_resumed(tmp_path):
    from alignpipe.models.training import last_checkpoint

    for step, state in ((4, '{"global_step": 4}'), (8, '{"global_st')):  # killed while writing step 8's state
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path).endswith("checkpoint-4")
    assert not (tmp_path / "checkpoint-8").exists()  # removed, so Trainer's rotation never counts it


def test_adapter_config_is_written_in_the_same_order_by_every_process(tmp_path):
    """PEFT writes target_modules as list(set): string-hash order, different in each Python process."""
    script = """
import sys
from peft import LoraConfig
from alignpipe.models.training import sort_peft_sets

class Holder:  # what sort_peft_sets reads from a PeftModel
    peft_config = {"default": LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"])}

sort_peft_sets(Holder).peft_config["default"].save_pretrained(sys.argv[1])
"""
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / seed)], env=env, check=True, timeout=300)
    first = (tmp_path / "1" / "adapter_config.json").read_bytes()
    assert first == (tmp_path / "2" / "adapter_config.json").read_bytes()
    modules = json.loads(first)["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7
