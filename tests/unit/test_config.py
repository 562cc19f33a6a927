"""Config integrity (every params section loads, every param dvc.yaml names exists) and precise errors."""

import pytest
import yaml

from alignpipe.config import ConfigError, Params, load_params, validate_params


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


def test_every_dvc_param_exists(repo_root):
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    params = load_params(repo_root / "params.yaml").model_dump()
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        items = stage.get("foreach", [None])
        keys = [k.replace("${item}", str(i)) for i in items for k in body.get("params", [])]
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
