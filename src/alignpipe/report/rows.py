"""Which evaluated models each report table shows, read from the params (no table lists its models by hand).

The evaluated models are those of :attr:`alignpipe.config.Params.evaluated`: ``base``, ``sft``, every align variant
(``align.variants`` then ``align.allo_variants``, in params order) and ``mix_<name>`` per ``sft_mix.mixtures`` entry.
A table picks its rows by what a variant does (its method), so a new variant lands in the right tables with no edit
here or in ``report:``. Row labels: ``report.labels`` (a model not named there: its name).

    followbench_rows(params)   # {name: label}: base, sft, every variant
    hierarchical_rows(params)  # base, sft + the variants without BMC or ALLO settings
    bmc_rows(params)           # the plain full-parameter variants (dpo_full), then the BMC variants
    allo_rows(params)          # sft, the plain-DPO rows (dpo_full, dpo_top10), then the other ALLO variants
    mixture_rows(params)       # {mixture: label} per sft_mix.mixtures entry
    full_dpo(params)           # the BMC and ALLO tables' second paired reference (dpo_full), or None
    seed_mixture(params)       # the data-source table's paired reference (the seed-only mixture)
"""

from __future__ import annotations

from alignpipe.config import FIXED_MODELS, Params, VariantSection, is_full_dpo


def label(params: Params, name: str) -> str:
    """The row label of evaluated model ``name`` (``report.labels``, else the name itself)."""
    return params.report.labels.get(name, name)


def _labelled(params: Params, names: list[str]) -> dict[str, str]:
    return {name: label(params, name) for name in names}


def followbench_rows(params: Params) -> dict[str, str]:
    """Every evaluated model but the data mixtures: base, sft, then every variant (params order)."""
    return _labelled(params, [*FIXED_MODELS, *params.align.variants])


def is_plain(variant: VariantSection) -> bool:
    """Neither BMC (bridged pairs, token weights) nor ALLO: a Hierarchical Alignment row."""
    return not variant.is_bmc and variant.allo is None


def hierarchical_rows(params: Params) -> dict[str, str]:
    """base, sft and the plain variants (full DPO, LoRA on all layers or on a block)."""
    return _labelled(params, [*FIXED_MODELS, *(n for n, v in params.align.variants.items() if is_plain(v))])


def bmc_rows(params: Params) -> dict[str, str]:
    """The plain full-parameter variants (BMC's DPO baseline), then the BMC variants; ``report.bmc_labels`` first."""
    variants = params.align.variants
    names = [n for n, v in variants.items() if is_full_dpo(v)] + [n for n, v in variants.items() if v.is_bmc]
    return {name: params.report.bmc_labels.get(name, label(params, name)) for name in names}


def is_masked_dpo(variant: VariantSection) -> bool:
    """An ALLO variant trained with the plain DPO loss on a neuron mask (no forgetting, top_eps 1: dpo_top10)."""
    return variant.allo is not None and not variant.allo.forget and variant.allo.top_eps == 1.0


def allo_rows(params: Params) -> dict[str, str]:
    """The ALLO table: its baselines (sft, the plain full-parameter variants, the masked plain-DPO variants), then
    the other ALLO variants, each group in params order."""
    variants = params.align.variants
    baselines = [n for n, v in variants.items() if is_full_dpo(v) or is_masked_dpo(v)]
    allo = [n for n, v in variants.items() if v.allo is not None and not is_masked_dpo(v)]
    return _labelled(params, ["sft", *baselines, *allo])


def mixture_rows(params: Params) -> dict[str, str]:
    """The data-source table: mixture name -> the label of its evaluated model ``mix_<name>``."""
    return {name: label(params, f"mix_{name}") for name in params.sft_mix.mixtures}


def full_dpo(params: Params) -> str | None:
    """The BMC and ALLO tables' second reference of the paired columns (the first is ``report.reference``): the
    first plain full-parameter variant in params order (``dpo_full``), None when there is none."""
    return next((n for n, v in params.align.variants.items() if is_full_dpo(v)), None)


def seed_mixture(params: Params) -> str | None:
    """The data-source table's reference of the paired columns: the first mixture trained on the seed data alone
    (sources ``[seed]``), else the first mixture; None without mixtures."""
    mixtures = params.sft_mix.mixtures
    return next((n for n, src in mixtures.items() if list(src) == ["seed"]), next(iter(mixtures), None))
