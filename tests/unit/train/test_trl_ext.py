"""alignpipe's TRL extension: the TRL internals it was read from are unchanged, it is the only place that overrides
them, and TRL's private calls reach its public hooks.

When TRL changes, these tests fail naming the internal to re-read (``alignpipe.train.trl_ext.TRL_INTERNALS``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import trl
import trl.trainer.dpo_trainer as trl_dpo
from trl import DPOTrainer

from alignpipe.train import trl_ext

# name in trl.trainer.dpo_trainer -> (parameter names, sha256 of inspect.getsource), as read in trl 1.16.0.
PINS: dict[str, tuple[tuple[str, ...], str]] = {
    "DPOTrainer.__init__": (
        ("self", "model", "ref_model", "args", "data_collator", "train_dataset", "eval_dataset", "processing_class",
         "compute_metrics", "callbacks", "optimizers", "quantization_config", "peft_config"),
        "632f447c71dcb04361800303be2192d8e48b2b3ccffd415fbf639c03a5dfd84f"),
    "DPOTrainer._prepare_dataset": (
        ("self", "dataset", "processing_class", "args", "dataset_name"),
        "35e349e8e8266df4a098b8c0b9949729e06d794f67dc24b666863f9f26e1bb55"),
    "DPOTrainer._set_signature_columns_if_needed": (
        ("self",),
        "71225a628baed4cb39147a4d594b56a5f86c68a2397466f8a23aebcdee9414a9"),
    "DPOTrainer._precompute_ref_logps": (
        ("self", "dataset", "name", "batch_size"),
        "f2c098c7da6ca701978f476021fbb9482837dee4b83cc04b98ca2a214e856e4d"),
    "DPOTrainer._compute_loss": (
        ("self", "model", "inputs", "return_outputs"),
        "5e58a1699e0d76cd093095fa24cfe6ca5cb950fa73ad769d4e4c483d6ff722d2"),
    "DPOTrainer.compute_ref_log_probs": (
        ("self", "model", "inputs"),
        "90611af9cbadb8ecfe0152f237177bea34072e989937cd6341632cb787dafe0a"),
    "DPOTrainer.log": (
        ("self", "logs", "start_time"),
        "e80e122cfe5fd8ad2b36edb3fe106ed2c754fa24bb4c1f5e00a755aa72fe8481"),
    "DataCollatorForPreference.torch_call": (
        ("self", "examples"),
        "0b8bb4c294bf8420e407a8ba9fa616ec301054bf317441a3ff9893b9eb143a70"),
    "hash_module": (
        ("module",),
        "6b2d3f18279485e6147776f862c5c45f9afbc181a2bf166254a9370a87ed5ed2"),
}

# Every module that defines a trainer or collator on top of TRL's.
TRAINER_MODULES = ("alignpipe.train.trl_ext", "alignpipe.train.dpo", "alignpipe.train.reflogps",
                   "alignpipe.methods.bmc.trainer", "alignpipe.methods.allo.train")
HOOKS = ("prepare_tokenized", "extra_columns", "reference_logps", "pair_loss", "policy_logps")
SRC = Path(trl_ext.__file__).resolve().parents[1]  # src/alignpipe


def _resolve(name: str):
    return functools.reduce(getattr, name.split("."), trl_dpo)


def _reread(name: str) -> str:
    return (f"re-read trl.trainer.dpo_trainer.{name} in trl {trl.__version__} (alignpipe relies on it: "
            f"{trl_ext.TRL_INTERNALS[name]}), adapt alignpipe/train/trl_ext.py, then update TRL_VERSION and the pins "
            "in this test")


def test_installed_trl_is_the_version_read():
    assert trl.__version__ == trl_ext.TRL_VERSION, (
        f"trl {trl.__version__} is installed; alignpipe.train.trl_ext was read from trl {trl_ext.TRL_VERSION}")
    trl_ext.check_trl_version()


def test_another_trl_version_is_refused_naming_both():
    with pytest.raises(trl_ext.TRLVersionError, match=r"read from trl 1\.16\.0, but trl 1\.17\.0 is installed"):
        trl_ext.check_trl_version("1.17.0")


def test_every_internal_is_pinned():
    assert set(PINS) == set(trl_ext.TRL_INTERNALS)


@pytest.mark.parametrize("name", list(PINS))
def test_trl_internal_unchanged(name):
    params, digest = PINS[name]
    try:
        obj = _resolve(name)
    except AttributeError:
        pytest.fail(f"trl.trainer.dpo_trainer.{name} no longer exists: {_reread(name)}")
    got = tuple(inspect.signature(obj).parameters)
    assert got == params, f"{name}: parameters {got}, read as {params}: {_reread(name)}"
    source = hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
    assert source == digest, f"{name}: its source changed: {_reread(name)}"


def test_overrides_keep_trl_signatures():
    """Each TRL method HookedDPOTrainer overrides is listed, and takes TRL's parameters."""
    overridden = [n for n in vars(trl_ext.HookedDPOTrainer) if n.startswith("_") and hasattr(DPOTrainer, n)
                  and callable(getattr(DPOTrainer, n))]
    assert set(overridden) == {"__init__", "_prepare_dataset", "_set_signature_columns_if_needed",
                               "_precompute_ref_logps", "_compute_loss"}
    for name in overridden:
        assert f"DPOTrainer.{name}" in trl_ext.TRL_INTERNALS
        if name != "__init__":  # __init__ forwards *args/**kwargs
            ours = tuple(inspect.signature(getattr(trl_ext.HookedDPOTrainer, name)).parameters)
            assert ours == tuple(inspect.signature(getattr(DPOTrainer, name)).parameters), name


def test_hooks_are_not_trl_names():
    """A hook named like something TRL defines would override it silently."""
    assert [h for h in HOOKS if hasattr(DPOTrainer, h)] == []


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_no_trl_internal_overridden_outside_trl_ext():
    for module in TRAINER_MODULES:
        importlib.import_module(module)
    for base in (DPOTrainer, trl_dpo.DataCollatorForPreference):
        ours = [c for c in _subclasses(base) if c.__module__.startswith("alignpipe.")]
        assert ours
        for cls in (c for c in ours if c is not trl_ext.HookedDPOTrainer):
            private = [n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and hasattr(base, n)]
            assert private == [], f"{cls.__module__}.{cls.__name__} overrides TRL's {private}: use trl_ext's hooks"
            if base is DPOTrainer:
                assert issubclass(cls, trl_ext.HookedDPOTrainer), f"{cls.__name__} subclasses DPOTrainer directly"


def test_no_mock_in_production_code():
    for path in sorted(SRC.parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if "mock" in n.split(".")], f"{path}: imports {names}"


def _trainer(cls, helpers, store, sft_dir, tmp_path, rows: int = 4):
    from datasets import Dataset

    from alignpipe.models import load_model
    from alignpipe.train.dpo import dpo_config
    from alignpipe.utils.io import read_jsonl

    model, tok = load_model(Path(sft_dir) / "model", helpers.make_params().model, padding_side="right")
    pairs = read_jsonl(Path(store[0]) / "pairs.jsonl")[:rows]
    return cls(model=model, args=dpo_config(helpers.make_params(), None, tmp_path / "out"),
               train_dataset=Dataset.from_list(pairs), processing_class=tok)


class Recording(trl_ext.HookedDPOTrainer):
    """Records which hooks TRL reached; the reference is a constant."""

    extra_columns = ("mine",)

    def prepare_tokenized(self, dataset, name):
        self.calls = [("prepare_tokenized", name, "prompt_ids" in dataset.column_names)]
        return dataset.add_column("mine", [1] * len(dataset))

    def reference_logps(self, dataset, name, batch_size):
        self.calls.append(("reference_logps", name, "mine" in dataset.column_names))
        dataset = dataset.add_column("ref_chosen_logps", [-3.0] * len(dataset))
        return dataset.add_column("ref_rejected_logps", [-4.0] * len(dataset))

    def pair_loss(self, model, inputs, return_outputs):
        self.calls.append(("pair_loss",))
        return super().pair_loss(model, inputs, return_outputs)


def test_trl_reaches_the_hooks(helpers, store, sft_dir, tmp_path):
    trainer = _trainer(Recording, helpers, store, sft_dir, tmp_path)
    assert trainer.calls == [("prepare_tokenized", "train", True), ("reference_logps", "train", True)]
    kept = trainer._remove_unused_columns(trainer.train_dataset)
    assert {"mine", "ref_chosen_logps", "prompt_ids"} <= set(kept.column_names) and "prompt" not in kept.column_names
    batch = trainer.data_collator([{k: v for k, v in kept[i].items() if k != "mine"} for i in range(4)])
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        # policy_logps is the forward TRL's loss runs: sigmoid DPO on its sums against the constant reference.
        logps = trainer.policy_logps(trainer.model, batch).sum(1)
    assert trainer.calls[-1] == ("pair_loss",)
    margin = (logps[:4] - -3.0) - (logps[4:] - -4.0)
    assert float(loss) == pytest.approx(float(-F.logsigmoid(trainer.beta * margin).mean()), abs=1e-6)


def test_reference_hook_is_required(helpers, store, sft_dir, tmp_path):
    with pytest.raises(NotImplementedError, match="reference_logps"):
        _trainer(trl_ext.HookedDPOTrainer, helpers, store, sft_dir, tmp_path)


def test_trl_weight_hash_is_skipped_and_restored(helpers, store, sft_dir, tmp_path, monkeypatch):
    """Building a trainer never hashes the weights, and leaves TRL's module as it found it."""
    def refuse(module):
        raise AssertionError("TRL hashed the model")

    monkeypatch.setattr(trl_dpo, "hash_module", refuse)
    trainer = _trainer(Recording, helpers, store, sft_dir, tmp_path)
    assert trainer._precompute_model_hash == "alignpipe-precompute-replaced"
    assert trl_dpo.hash_module is refuse
    with pytest.raises(RuntimeError, match="inside"):
        with trl_ext._skip_reference_hash():
            raise RuntimeError("inside")
    assert trl_dpo.hash_module is refuse
