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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

CATEGORIES = ("content", "situation", "style", "format", "example", "mixed")
LEVELS = (1, 2, 3, 4, 5)


class ConfigError(ValueError):
    """A params value (or a file named by one) is invalid; the message says which, and what is allowed."""


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelSection(Strict):
    """Which model the pipeline aligns."""

    name_or_path: str | None = Field(
        None, description="Hub id or local directory; null builds and pretrains the built-in model."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when name_or_path is a hub id.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the hub (off by default).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="Weights dtype on load.")


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


def _check_trainer_kwargs(kwargs: dict[str, Any], config_cls: type, forbidden: tuple[str, ...]) -> dict[str, Any]:
    """Validate trainer kwargs against a transformers/trl config dataclass (names and value types)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in kwargs.items():
        if key in forbidden:
            raise _bad(key, value, "set by the pipeline itself; it cannot be given here")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise _bad(key, value, f"unknown key for {config_cls.__name__}{hint}")
        default = fields[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise _bad(key, value, "must be true or false")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(key, value, "must be a number")
    if "learning_rate" in kwargs and not kwargs["learning_rate"] > 0:
        raise _bad("learning_rate", kwargs["learning_rate"], "must be > 0")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs"):
        if key in kwargs and not kwargs[key] > 0:
            raise _bad(key, kwargs[key], "must be > 0")
    return kwargs


# Keys the pipeline sets itself (paths, seeds, devices, reporting): overriding them would break caching.
_PIPELINE_OWNED = ("output_dir", "seed", "data_seed", "report_to", "use_cpu", "resume_from_checkpoint", "logging_dir")


class BaseSection(Strict):
    """The ``base`` stage: tokenizer + pretraining of the built-in model, or resolving ``model.name_or_path``."""

    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    architecture: ArchitectureSection = Field(default_factory=ArchitectureSection)
    block_size: int = Field(256, ge=16, description="Tokens per packed pretraining sequence.")
    chat_copies: int = Field(
        1, ge=0, le=10, description="Copies of the world's train dialogues (sft.jsonl), rendered with the chat "
        "template, added to the pretraining corpus (teaches the chat format; 0 = plain corpus only)."
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict, description="transformers.TrainingArguments overrides (learning_rate, max_steps, ...)."
    )

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from transformers import TrainingArguments

        return _check_trainer_kwargs(v, TrainingArguments, _PIPELINE_OWNED)


class SFTSection(Strict):
    """The ``sft`` stage: TRL SFTTrainer on the (oracle or synthesized) train dialogues."""

    max_length: int = Field(384, ge=16, description="Truncation length of prompt + completion tokens.")
    trainer: dict[str, Any] = Field(default_factory=dict, description="trl.SFTConfig overrides.")

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import SFTConfig

        return _check_trainer_kwargs(v, SFTConfig, _PIPELINE_OWNED + ("max_length",))


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
    levels: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4, 5], description="Train-pool levels to sample.")
    max_prompts: int | None = Field(None, ge=1, description="Cap on train prompts (None: all).")

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
    forget_trainer: dict[str, Any] = Field(
        default_factory=dict, description="trl.DPOConfig overrides for the forgetting stage (learning_rate, ...)."
    )

    @field_validator("forget_trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import DPOConfig

        return _check_trainer_kwargs(v, DPOConfig, _PIPELINE_OWNED + ("max_length", "precompute_ref_log_probs"))

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
    trainer: dict[str, Any] = Field(default_factory=dict, description="trl.DPOConfig overrides for this variant.")
    allo: AlloVariantSection | None = Field(
        None, description="ALLO forget-then-learn on neuron masks (needs peft: none); null = plain DPO."
    )

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import DPOConfig

        return _check_trainer_kwargs(v, DPOConfig, _PIPELINE_OWNED + ("max_length", "precompute_ref_log_probs"))

    @model_validator(mode="after")
    def _allo(self) -> "VariantSection":
        if self.allo is not None and self.peft != "none":
            raise ValueError("allo masks select individual weights: it needs peft: none (use allo.block for a block)")
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


def _default_variants() -> dict[str, VariantSection]:
    return {
        "dpo_full": VariantSection(peft="none"),
        "lora_all": VariantSection(peft="lora", block="all"),
        "local": VariantSection(peft="lora", block="local"),
        "mid": VariantSection(peft="lora", block="mid"),
        "global": VariantSection(peft="lora", block="global"),
    }


class AlignSection(Strict):
    """The ``align@<variant>`` stages: TRL DPOTrainer on the preference pairs, one variant per stage."""

    max_length: int = Field(384, ge=16, description="Truncation length of prompt + response tokens.")
    lora: LoraSection = Field(default_factory=LoraSection)
    trainer: dict[str, Any] = Field(default_factory=dict, description="trl.DPOConfig overrides shared by variants.")
    variants: dict[str, VariantSection] = Field(default_factory=_default_variants)
    accelerate_config: str | None = Field(
        None, description="An accelerate config file (configs/accelerate/*.yaml): run align under accelerate launch."
    )

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import DPOConfig

        return _check_trainer_kwargs(v, DPOConfig, _PIPELINE_OWNED + ("max_length", "precompute_ref_log_probs"))


class NeuronsSection(Strict):
    """The ``neurons`` stage: ALLO preference-neuron scores after a short warm-up DPO, and masks at ratios."""

    warmup_trainer: dict[str, Any] = Field(
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

    @field_validator("warmup_trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import DPOConfig

        return _check_trainer_kwargs(v, DPOConfig, _PIPELINE_OWNED + ("max_length", "precompute_ref_log_probs"))

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
    trainer: dict[str, Any] = Field(default_factory=dict, description="trl.RewardConfig overrides.")
    key_fraction: float = Field(
        0.3, gt=0, le=1, description="Key tokens: the top fraction of each rejected response by wrongness score; "
        "r_t is 0 elsewhere."
    )
    weight_source: Literal["reward_model", "dpo_implicit"] = Field(
        "reward_model", description="Which per-token score becomes ALLO's r_t: the reward model's, or the warm-up "
        "model's implicit DPO reward."
    )
    beta: float = Field(0.1, gt=0, description="β of the implicit per-token DPO reward β(log π_warmup - log π_ref).")

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: dict[str, Any]) -> dict[str, Any]:
        from trl import RewardConfig

        return _check_trainer_kwargs(v, RewardConfig, _PIPELINE_OWNED + ("max_length",))


class EvaluateSection(Strict):
    """The ``evaluate`` stage: greedy generation over the evaluation pool, verifiers, judge, metrics."""

    max_new_tokens: int = Field(160, ge=1, le=8192, description="Generation budget per response.")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    levels: list[int] = Field(default_factory=lambda: list(LEVELS), description="FollowBench levels scored (1-5).")
    bootstrap_samples: int = Field(1000, ge=0, description="Bootstrap resamples of groups for the 95% intervals.")
    confidence: float = Field(0.95, gt=0, lt=1)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in LEVELS]
        if bad or not v:
            raise ValueError(f"levels {bad or v} not allowed: choose from {list(LEVELS)}")
        return sorted(set(v))


class ReportSection(Strict):
    """The ``report`` stage: which evaluated models appear, in which order, under which row names."""

    rows: dict[str, str] = Field(
        default_factory=lambda: {"base": "Base", "sft": "SFT"}, description="evaluated model -> row label."
    )
    hierarchical: list[str] = Field(
        default_factory=list, description="Models (names from rows) in the Hierarchical Alignment table; [] = none."
    )
    reference: str = Field("sft", description="Model the pairwise win/tie/loss and alignment tax compare against.")
    tie_margin: float = Field(0.5, ge=0, description="Judge-score differences below this count as a tie.")
    allo: list[str] = Field(
        default_factory=list, description="Models (names from rows) in the ALLO table, in order; [] = no table."
    )

    @model_validator(mode="after")
    def _known(self) -> "ReportSection":
        unknown = [m for m in self.hierarchical if m not in self.rows]
        if unknown:
            raise ValueError(f"hierarchical names {unknown}, which are not in report.rows {list(self.rows)}")
        unknown_allo = [m for m in self.allo if m not in self.rows]
        if unknown_allo:
            raise ValueError(f"allo names {unknown_allo}, which are not in report.rows {list(self.rows)}")
        if self.hierarchical and self.reference not in self.hierarchical:
            raise ValueError(f"reference '{self.reference}' must be one of hierarchical {self.hierarchical}")
        return self


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

    @model_validator(mode="after")
    def _allo_ratios(self) -> "Params":
        for name, variant in self.align.variants.items():
            if variant.allo is None:
                continue
            for key in ("forget_ratio", "learn_ratio"):
                ratio = getattr(variant.allo, key)
                if ratio is not None and ratio not in self.neurons.ratios:
                    raise ValueError(f"align.variants.{name}.allo.{key} = {ratio}: not among neurons.ratios "
                                     f"{self.neurons.ratios} (no mask file is made for it)")
        return self


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parent = Params
            for part in e["loc"][:-1]:
                ann = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
                parent = ann.annotation if ann is not None else None
            allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{source}: unknown key '{key}'{hint}; allowed keys here: {allowed}")
        elif e["type"] == "bad_subkey":
            ctx = e["ctx"]
            lines.append(f"{source}: {key}.{ctx['subkey']} = {ctx['value']!r}: {ctx['allowed']}")
        else:
            value = e.get("input")
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key} = {value!r}: {msg}")
    return "\n".join(lines)


def validate_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping; raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (the whole file, so a typo in any section fails every stage early)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {err}") from None
    return validate_params(raw, str(path))
