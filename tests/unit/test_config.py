"""Config integrity (every params section loads, every param dvc.yaml names exists) and precise errors."""

import pytest
import yaml

from alignpipe.config import ConfigError, Params, load_params, read_yaml, validate_params
from alignpipe.profile import load_profile


def test_params_yaml_loads(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params)
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields), "params.yaml should spell out every section"


def test_profiles_load(repo_root):
    base = yaml.safe_load((repo_root / "params.yaml").read_text())
    for path in sorted((repo_root / "profiles").glob("*.yaml")):
        validate_params(_merge(base, yaml.safe_load(path.read_text()) or {}), str(path))


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def _foreach_keys(foreach, params: dict) -> list:
    """The instance keys of a dvc.yaml foreach: a list's items, a dict's keys, or those of ``${a.b}`` in params."""
    if isinstance(foreach, str):  # ${align.variants}: a dict of params.yaml
        node = params
        for part in foreach.removeprefix("${").removesuffix("}").split("."):
            node = node[part]
        foreach = node
    return list(foreach)


def test_every_dvc_param_exists(repo_root):
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    params = load_params(repo_root / "params.yaml").model_dump()
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        items = _foreach_keys(stage["foreach"], params) if "foreach" in stage else [None]
        keys = [k.replace("${item}", str(i)).replace("${key}", str(i)) for i in items for k in body.get("params", [])]
        for key in keys:
            node = params
            for part in key.split("."):
                assert part in node, f"stage {name} names param '{key}', which params.yaml lacks"
                node = node[part]


def test_every_stage_has_a_flow_and_declares_it(repo_root):
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        module = body["cmd"].split("-m ", 1)[1].split()[0]
        path = repo_root / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"stage {name} runs {module}, which does not exist"
        assert str(path.relative_to(repo_root)) in body["deps"], f"stage {name} must depend on its flow file"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"world": {"n_entitis": 10}}, "unknown key 'world.n_entitis' (did you mean 'n_entities'?)"),
        ({"world": {"n_entities": 2}}, "world.n_entities = 2"),
        ({"world": {"categories": ["content", "poetry"]}}, "world.categories.1 = 'poetry'"),
        ({"seed": "abc"}, "seed = 'abc'"),
        ({"seed": -1}, "seed = -1"),
        ({"sft": {"trainer": {"learning_rat": 1e-4}}}, "sft.trainer.learning_rat = 0.0001: unknown key for SFTConfig"),
        ({"sft": {"trainer": {"learning_rate": -1}}}, "sft.trainer.learning_rate = -1: must be > 0"),
        ({"sft": {"trainer": {"num_train_epochs": "three"}}}, "sft.trainer.num_train_epochs = 'three': must be a number"),
        ({"base": {"trainer": {"output_dir": "/tmp/x"}}}, "base.trainer.output_dir = '/tmp/x': set by the pipeline"),
        ({"base": {"architecture": {"hidden_size": 100, "num_attention_heads": 3}}}, "must be divisible"),
        ({"evaluate": {"levels": [0, 6]}}, "evaluate.levels = [0, 6]"),
        ({"align": {"variants": {"x": {"peft": "none", "token_weights": "bmc", "allo": {"forget": False}}}}},
         "ALLO's losses do not combine with BMC's"),
        ({"align": {"allo_variants": {"x": {"peft": "lora", "allo": {"forget": False}}}}},
         "align.allo_variants.x = "),  # merged into align.variants when validated, named where the file has it
        ({"align": {"allo_variants": {"x": {"peft": "none", "allo": {"learn_ratio": 7}}}}},
         "align.allo_variants.x.allo.learn_ratio = 7.0: not among neurons.ratios"),
        ({"align": {"variants": {"x": {"peft": "none"}}, "allo_variants": {"x": {"peft": "none", "allo": {}}}}},
         "variant name(s) ['x'] appear in both align.variants and align.allo_variants"),
        ({"align": {"allo_variants": {"x": {"peft": "none"}}}}, "align.allo_variants ['x'] have no allo settings"),
        ({"align": {"variants": {"sft": {"peft": "none"}}}}, "align variant name(s) ['sft']: base, sft and mix_*"),
        ({"report": {"labels": {"nope": "N"}}}, "report.labels names ['nope'], which are not evaluated models"),
        ({"report": {"labels": {"base": "S", "sft": "S"}}}, "row label(s) ['S'] name more than one model"),
        ({"report": {"reference": "nope"}}, "report.reference = 'nope': not base, sft or an align variant"),
        ({"evaluate": {"confidence": 1.5}}, "evaluate.confidence = 1.5"),
        ({"model": {"dtype": "float8"}}, "model.dtype = 'float8'"),
        ({"modle": {}}, "unknown key 'modle' (did you mean 'model'?)"),
    ],
)
def test_bad_params_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        validate_params(raw)
    assert expected in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nworld:\n  n_entities: [1,\n")
    with pytest.raises(ConfigError, match=r"params.yaml line \d+, column \d+: not valid YAML \(.+\)$"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_followbench_section_validation(tmp_path):
    from alignpipe.config import validate_params

    fb = validate_params({"evaluate": {"benchmark": "followbench"}}).evaluate.followbench
    assert (fb.rules, fb.judge.backend, fb.judge.retries, fb.source) == ("compat", "model", 1, "YuxinJiang/FollowBench")
    for raw, expected in [
        ({"benchmark": "lmsys"}, "evaluate.benchmark = 'lmsys'"),
        ({"followbench": {"rules": "loose"}}, "evaluate.followbench.rules = 'loose'"),
        ({"followbench": {"judge": {"backend": "gpt4"}}}, "evaluate.followbench.judge.backend = 'gpt4'"),
        ({"followbench": {"judge": {"retries": 7}}}, "evaluate.followbench.judge.retries = 7"),
        ({"followbench": {"max_groups_per_category": 0}}, "evaluate.followbench.max_groups_per_category = 0"),
        ({"followbench": {"categories": ["style", "style"]}}, "evaluate.followbench.categories"),
        ({"followbench": {"judge": {"prompt": str(tmp_path / "nope.yaml")}}}, "nope.yaml not found"),
        ({"followbench": {"judje": {}}}, "unknown key 'evaluate.followbench.judje' (did you mean 'judge'?)"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate_params({"evaluate": raw})
        assert expected in str(err.value), str(err.value)


def test_trainer_overrides_are_checked_without_importing_the_trainer_stack_once_cached(tmp_path):
    """The field table of SFTConfig / DPOConfig is cached on disk (by package version): a stage start after the first
    validates `sft.trainer` and rejects a typo without importing transformers' TrainingArguments (seconds)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from alignpipe.config import ConfigError, validate_params\n"
        "validate_params({'sft': {'trainer': {'num_train_epochs': 2}}, 'align': {'trainer': {'beta': 0.2}}})\n"
        "try:\n"
        "    validate_params({'sft': {'trainer': {'learnig_rate': 0.1}}})\n"
        "except ConfigError as err:\n"
        "    print('rejected' if 'learning_rate' in str(err) else err)\n"
        "print('imported' if 'transformers.training_args' in sys.modules else 'not imported')\n"
    )
    env = {**__import__("os").environ, "ALIGNPIPE_WORK_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0].splitlines() == ["rejected", "imported"]  # the first start builds the table
    assert runs[1].splitlines() == ["rejected", "not imported"]  # later starts read it
    assert sorted(p.name.split("-", 2)[2] for p in (tmp_path / "schema").iterdir()) == ["DPOConfig.json",
                                                                                          "SFTConfig.json"]


def test_variants_have_one_source(repo_root):
    """params.yaml is the only list of variants: the typed model has none of its own; both dicts merge in order."""
    assert validate_params({}).align.variants == {}
    params = load_params(repo_root / "params.yaml")
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())["align"]
    assert list(params.align.variants) == [*raw["variants"], *raw["allo_variants"]]
    assert all(params.align.variant(n).allo is not None for n in raw["allo_variants"])
    assert not any(params.align.variant(n).allo for n in raw["variants"])
    assert params.align.key("allo") == "align.allo_variants.allo"
    assert params.align.key("global") == "align.variants.global"
    dumped = params.model_dump()["align"]  # written back as the file spells it
    assert list(dumped["variants"]) == list(raw["variants"])
    assert list(dumped["allo_variants"]) == list(raw["allo_variants"])
    with pytest.raises(ConfigError, match=r"unknown align variant 'nope'; params\.yaml align\.variants has \["):
        params.align.variant("nope")


def test_allo_variant_in_the_plain_dict_is_refused(tmp_path):
    """dvc.yaml's align@ stages lack the ALLO inputs: a params file must list ALLO variants under allo_variants."""
    path = tmp_path / "params.yaml"
    path.write_text("align:\n  variants:\n    x: {peft: none, allo: {forget: false}}\n")
    with pytest.raises(ConfigError, match=r"align\.variants \['x'\] have allo settings: ALLO variants go under "
                       r"align\.allo_variants"):
        load_params(path)


def test_a_new_variant_is_one_params_entry(repo_root, tmp_path):
    """One entry in align.variants: DVC makes its align@ and evaluate_align@ stages, the report its rows."""
    import subprocess
    import sys

    from alignpipe.report.rows import bmc_rows, followbench_rows, hierarchical_rows

    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_bytes((repo_root / name).read_bytes())
    text = (tmp_path / "params.yaml").read_text()
    anchor = "    global_bmc: {peft: lora, block: global, pairs: bridged, token_weights: bmc}"
    assert anchor in text
    (tmp_path / "params.yaml").write_text(text.replace(anchor, anchor + "\n    mid_bmc: {peft: lora, block: mid, "
                                                                        "pairs: bridged, token_weights: bmc}"))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout.split()
    assert {"align@mid_bmc", "evaluate_align@mid_bmc"} <= set(listed)
    assert not any("mid_bmc" in s for s in listed if not s.startswith(("align@", "evaluate_align@")))
    params = load_params(tmp_path / "params.yaml")
    assert list(followbench_rows(params))[-7:] == ["mid_bmc", "allo", "allo_no_mask", "allo_no_token_weights",
                                                   "allo_no_forget", "dpo_top10", "global_allo"]
    assert bmc_rows(params)["mid_bmc"] == "mid_bmc" and "mid_bmc" not in hierarchical_rows(params)


@pytest.mark.parametrize("text, key, lines", [
    ("world:\n  n_entities: 12\nseed: 1\nworld:\n  corpus_paraphrases: 2\n", "world", (1, 4)),
    ("sft:\n  trainer:\n    learning_rate: 1.0e-4\n    'learning_rate': 2.0e-4\n", "sft.trainer.learning_rate",
     (3, 4)),
    ("sft_mix:\n  mixtures:\n    a: [seed]\n    a: [seed, webr]\n", "sft_mix.mixtures.a", (3, 4)),
    ("x:\n  - {a: 1, a: 2}\n", "x.0.a", (2, 2)),
])
def test_a_key_written_twice_names_the_key_and_both_lines(tmp_path, text, key, lines):
    """PyYAML keeps the last of two equal keys silently; the params loader refuses them (issue 18)."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value) == (f"{path}: key '{key}' is written twice (lines {lines[0]} and {lines[1]}); YAML would "
                                 "keep only the last one and drop the other's values silently: write each key once "
                                 "(merge the two into one)")


def test_merge_keys_may_override_and_a_profile_is_checked_too(tmp_path):
    assert read_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n") == {"a": {"b": 1}, "c": {"b": 2}}
    (tmp_path / "p.yaml").write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: key 'seed' is written twice \(lines 1 and 2\)"):
        load_profile("p", tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n", "# world:\n#   n_entities: 12\n", "---\n"])
def test_an_empty_params_file_is_refused_not_read_as_defaults(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value) == (f"{path}: file is empty (only blank lines or comments); a params file must hold the "
                                 "sections to set, e.g. 'seed: 0' (an empty one would run every stage on defaults "
                                 "silently)")


@pytest.mark.parametrize("key, value", [("save_strategy", "epoch"), ("save_total_limit", 5),
                                        ("logging_strategy", "epoch"), ("dataloader_num_workers", 4),
                                        ("dataloader_pin_memory", False)])
def test_every_key_pipeline_args_sets_is_refused_in_a_trainer_section(key, value):
    with pytest.raises(ConfigError) as caught:
        validate_params({"sft": {"trainer": {key: value}}})
    assert str(caught.value) == (f"params.yaml: sft.trainer.{key} = {value!r}: set by the pipeline itself; it cannot "
                                 "be given here")


def test_the_owned_keys_are_the_keys_pipeline_args_sets(tmp_path):
    from alignpipe.config import _PIPELINE_OWNED, PIPELINE_ARGS
    from alignpipe.models.training import pipeline_args

    # bf16/fp16 are forced off on CPU only; with a GPU the trainer section sets them.
    assert set(pipeline_args(tmp_path, 0)) - {"bf16", "fp16"} == set(PIPELINE_ARGS)
    assert set(PIPELINE_ARGS) <= set(_PIPELINE_OWNED)


def test_an_unknown_key_inside_a_variant_lists_a_variants_keys():
    with pytest.raises(ConfigError) as caught:
        validate_params({"align": {"variants": {"global": {"blok": "x"}}}})
    assert str(caught.value) == ("params.yaml: unknown key 'align.variants.global.blok' (did you mean 'block'?); "
                                 "allowed keys here: ['allo', 'block', 'layers', 'pairs', 'peft', 'token_weights', "
                                 "'trainer']")
    with pytest.raises(ConfigError) as caught:  # an optional section inside a variant
        validate_params({"align": {"allo_variants": {"g": {"allo": {"blok": "x"}}}}})
    assert str(caught.value) == ("params.yaml: unknown key 'align.allo_variants.g.allo.blok' (did you mean 'block'?); "
                                 "allowed keys here: ['block', 'forget', 'forget_ratio', 'forget_trainer', "
                                 "'learn_ratio', 'token_weights', 'top_eps']")


def test_a_params_file_that_is_not_utf8_names_the_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("seed: 1\nworld:\n  n_entitiés: 1\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value) == f"{path} line 3: not UTF-8 text (byte 0xe9 at column 11); params files must be UTF-8"
    path.write_bytes(b"\xffseed: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value) == f"{path} line 1: not UTF-8 text (byte 0xff at column 1); params files must be UTF-8"
