"""params.yaml survives `dvc exp run -S`: DVC writes the overridden values back through ruamel
(`dvc.utils.hydra.apply_overrides`, what `dvc exp run -S` / `--set-param` calls for a params file without Hydra),
which re-emits lists in block style, null as an empty value and flow mappings wrapped at 80 columns. The file is
kept in that form, so an experiment's diff of params.yaml is the values it set and nothing else."""

from __future__ import annotations

import difflib
import shutil

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

OVERRIDES = [
    (["seed=1234"], []),  # a value set to what it is: nothing changes
    (["evaluate.max_new_tokens=64"], [("  max_new_tokens: 160", "  max_new_tokens: 64")]),
    (["align.bmc.beta=0.2", "world.demo_noise.careless=0.1"], None),
]


def _changed(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.append(("\n".join(a[i1:i2]), "\n".join(b[j1:j2])))
    return out


@pytest.mark.parametrize(("overrides", "expected"), OVERRIDES)
def test_exp_run_set_param_changes_only_the_values_it_sets(repo_root, tmp_path, overrides, expected):
    path = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", path)
    before = path.read_text(encoding="utf-8")
    apply_overrides(path, overrides)
    after = path.read_text(encoding="utf-8")
    changed = _changed(before, after)
    if expected is None:  # one line per override, the key's line, comments kept
        assert len(changed) == len(overrides), changed
        for (old, new), ov in zip(sorted(changed), sorted(overrides)):
            key, value = ov.split("=")
            assert "\n" not in old and old.split("#")[0].strip().startswith(key.split(".")[-1] + ":")
            assert new.split("#")[0].strip() == f"{key.split('.')[-1]}: {value}"
            assert old.partition("#")[2] == new.partition("#")[2]  # the comment stays where it was
    else:
        assert changed == expected, (
            "params.yaml is not in the form `dvc exp run -S` writes back; these lines would change: "
            f"{changed[:5]} (write lists as block sequences, null as an empty value, mappings in block style "
            "past 80 columns; a comment after a list's last item is lost: put it on the key's line)")
    loaded, want = yaml.safe_load(after), yaml.safe_load(before)
    for ov in overrides:  # and the values are the ones set
        key, value = ov.split("=")
        node = want
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    assert loaded == want
