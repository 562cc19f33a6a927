"""alignpipe's one extension of TRL's ``DPOTrainer``: every override of a TRL internal lives here.

Read from trl ``TRL_VERSION`` (``trl/trainer/dpo_trainer.py``). :class:`HookedDPOTrainer` is the only class in
alignpipe that overrides private methods of ``trl.DPOTrainer``; it turns each into a public, documented hook that
the method trainers override instead (:class:`~alignpipe.train.dpo.StoredRefDPOTrainer`,
:class:`~alignpipe.methods.bmc.trainer.BMCDPOTrainer`, :class:`~alignpipe.methods.allo.train.AlloTrainer`,
:class:`~alignpipe.train.reflogps.PerTokenRefTrainer`)::

    TRL internal (private)                          public hook here
    _prepare_dataset(dataset, processing_class,     prepare_tokenized(dataset, name): after TRL's tokenization
                     args, dataset_name)
    _set_signature_columns_if_needed()              extra_columns: columns kept besides TRL's own
    _precompute_ref_logps(dataset, name, batch)     reference_logps(dataset, name, batch_size): the reference
    _compute_loss(model, inputs, return_outputs)    pair_loss(model, inputs, return_outputs): TRL's DPO loss by
                                                    default

plus :meth:`HookedDPOTrainer.policy_logps`, the policy forward exactly as TRL's ``_compute_loss`` runs it.

How TRL 1.16 calls them (``DPOTrainer.__init__``): ``_prepare_dataset`` once per dataset (train, then eval),
then, with ``precompute_ref_log_probs=True``, ``_precompute_ref_logps`` once per dataset; ``Trainer`` calls
``_set_signature_columns_if_needed`` whenever it drops unused columns (``remove_unused_columns``) and
``compute_loss`` -> ``_compute_loss`` every step.

One TRL module attribute is swapped, for the duration of ``DPOTrainer.__init__`` only: ``hash_module``, whose
digest of every weight keys the cache of TRL's own reference precompute, which these hooks replace (see
:func:`_skip_reference_hash`; TRL offers no argument to skip it).

Guards against a TRL upgrade changing these internals under alignpipe:

- :func:`check_trl_version` runs when a trainer is built and raises :class:`TRLVersionError` unless the installed
  trl is ``TRL_VERSION`` (an error, not a warning: ``pyproject.toml`` pins that version, so a mismatch is a broken
  environment, and a private method whose contract moved could change the trained weights without failing, in a
  pipeline whose outputs must stay byte-identical; a warning in a long DVC log would let such a run finish).
  Importing this module does not check, so config validation and tooling that import ``alignpipe.train`` still run.
- ``tests/unit/train/test_trl_ext.py`` pins the signature and a hash of the source of every entry of
  :data:`TRL_INTERNALS` and fails naming the one to re-read.

Upgrading TRL: re-read each entry of :data:`TRL_INTERNALS` in the new version, adapt the overrides below, then
update ``TRL_VERSION``, the pins in the test and ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import trl
import trl.trainer.dpo_trainer as trl_dpo
from trl import DPOTrainer

TRL_VERSION = "1.16.0"

# Every TRL object this module (and the trainers built on it) relies on, in ``trl.trainer.dpo_trainer``, with what
# alignpipe relies on; the test pins each one's source.
TRL_INTERNALS: dict[str, str] = {
    "DPOTrainer.__init__": "calls _prepare_dataset, then hash_module (only to key the cache of its own "
                           "_precompute_ref_logps), then _precompute_ref_logps; sets _metrics, beta, ld_alpha, "
                           "loss_weights",
    "DPOTrainer._prepare_dataset": "overridden: TRL's tokenization (prompt_ids/chosen_ids/rejected_ids), then "
                                   "prepare_tokenized",
    "DPOTrainer._set_signature_columns_if_needed": "overridden: TRL's column list plus extra_columns",
    "DPOTrainer._precompute_ref_logps": "overridden: replaced by reference_logps (TRL's never runs); returns the "
                                        "dataset with ref_chosen_logps/ref_rejected_logps",
    "DPOTrainer._compute_loss": "overridden: pair_loss; its default calls TRL's; policy_logps copies its policy "
                                "forward (labels, use_cache=False, fused_lm_head=True, log_probs[:, -(L-1):])",
    "DPOTrainer.compute_ref_log_probs": "mirrored by train/reflogps.compute_records (the stored reference values)",
    "DPOTrainer.log": "averages the lists in _metrics[mode] that the hooks append to",
    "DataCollatorForPreference.torch_call": "rows [chosen..., rejected...], prompt + completion, completion_mask, "
                                            "truncation; extended by BMCCollator, read by completion_tokens",
    "hash_module": "swapped for the duration of DPOTrainer.__init__ (see _skip_reference_hash)",
}

_NO_HASH = "alignpipe-precompute-replaced"
_HASH_SWAP = threading.RLock()


class TRLVersionError(RuntimeError):
    """The installed trl is not the version this module's overrides were read from."""


def check_trl_version(installed: str | None = None) -> None:
    """Raise :class:`TRLVersionError` unless ``installed`` (default: ``trl.__version__``) is ``TRL_VERSION``."""
    installed = trl.__version__ if installed is None else installed
    if installed != TRL_VERSION:
        raise TRLVersionError(
            f"alignpipe's TRL extension (alignpipe.train.trl_ext) was read from trl {TRL_VERSION}, but trl "
            f"{installed} is installed: install trl=={TRL_VERSION} (pyproject.toml pins it), or re-read "
            f"{', '.join(TRL_INTERNALS)} in trl {installed}, adapt trl_ext and run tests/unit/train/test_trl_ext.py"
        )


def _no_hash(module: torch.nn.Module) -> str:
    """Stands in for ``hash_module``: a constant, since no cache is keyed on it (see :func:`_skip_reference_hash`)."""
    return _NO_HASH


@contextlib.contextmanager
def _skip_reference_hash() -> Iterator[None]:
    """Make ``DPOTrainer.__init__``'s ``hash_module`` call free for the duration of the block.

    TRL 1.16's ``__init__`` runs ``hash_module(self.ref_model or self.model)`` with ``precompute_ref_log_probs``:
    it copies every weight to the CPU and hashes it (16 GB at 8B parameters) only to name the cache file of its own
    ``_precompute_ref_logps``, which :class:`HookedDPOTrainer` replaces, so the digest is never read. TRL has no
    argument to skip it and looks the function up in its module at call time, so the module attribute is swapped
    for a constant and restored on exit, under a lock, so two threads building trainers cannot leave it swapped.
    """
    with _HASH_SWAP:
        original = trl_dpo.hash_module
        trl_dpo.hash_module = _no_hash
        try:
            yield
        finally:
            trl_dpo.hash_module = original


class HookedDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` whose private hooks call public, documented methods; subclass it and override those.

    Everything else is ``DPOTrainer``'s own API. TRL's reference precompute never runs: with
    ``precompute_ref_log_probs=True`` the reference comes from :meth:`reference_logps`, which subclasses implement.
    """

    #: Dataset columns the trainer keeps besides TRL's own (``Trainer`` drops the others with
    #: ``remove_unused_columns``); the collator receives them.
    extra_columns: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any):
        check_trl_version()
        with _skip_reference_hash():
            super().__init__(*args, **kwargs)

    # ---- public hooks ------------------------------------------------------------------------------------------
    def prepare_tokenized(self, dataset: Any, name: str) -> Any:
        """Called once per dataset (``name``: "train", "eval" or the eval dict key) after TRL's tokenization.

        ``dataset`` has TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids`` (the ids it trains on) next to the
        input columns; return it with any extra columns (list them in :attr:`extra_columns`). Default: unchanged.
        """
        return dataset

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """The reference: called once per prepared dataset when ``precompute_ref_log_probs=True``.

        Return the dataset with float columns ``ref_chosen_logps``/``ref_rejected_logps`` (the reference
        log-probs TRL's loss reads from each batch); ``batch_size`` is TRL's ``precompute_ref_batch_size`` (or the
        per-device batch size) for implementations that run a model. There is no default: TRL's own precompute
        keys its on-disk cache on the model hash that this class skips, so falling back to it could reuse another
        model's values.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement reference_logps (the reference log-probs)")

    def pair_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """The loss of one collated batch (rows ``[chosen..., rejected...]``); default: TRL's DPO loss.

        Returns the loss, or ``(loss, outputs)`` with ``return_outputs``; log metrics into
        ``self._metrics[mode]`` (TRL averages them between logs).
        """
        return super()._compute_loss(model, inputs, return_outputs)

    def policy_logps(self, model: Any, inputs: dict[str, Any], rows: slice = slice(None)) -> torch.Tensor:
        """Per-token policy log-probs of ``rows`` of a collated batch, as TRL's ``_compute_loss`` computes them.

        Labels are the completion tokens (TRL's fused LM head returns 0 elsewhere), and ``[:, t]`` scores token
        t+1, so the values align with ``completion_mask[:, 1:]``.
        """
        comp = inputs["completion_mask"][rows]
        labels = inputs["input_ids"][rows].masked_fill(comp == 0, -100)
        out = model(input_ids=inputs["input_ids"][rows], attention_mask=inputs["attention_mask"][rows],
                    labels=labels, use_cache=False, fused_lm_head=True)
        return out.log_probs[:, -(comp.size(1) - 1):]

    # ---- TRL internals (trl 1.16.0): the only overrides in alignpipe -------------------------------------------
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        return self.prepare_tokenized(super()._prepare_dataset(dataset, processing_class, args, dataset_name),
                                      dataset_name)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        missing = [c for c in self.extra_columns if c not in self._signature_columns]
        if missing:
            self._signature_columns = [*self._signature_columns, *missing]

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        return self.reference_logps(dataset, name, batch_size)

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        return self.pair_loss(model, inputs, return_outputs)
