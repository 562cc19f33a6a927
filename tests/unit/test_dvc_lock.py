"""The committed dvc.lock is complete and current: every stage instance of dvc.yaml has a record, and each record's
code and params are the working tree's. A change to a stage's code or params without `make repro` fails here with
the stages to rerun, so the lock cannot silently go stale (numbers in it differ across CPU models; README).

Data deps (`data/...`) are not checked: a fresh clone has no data until `dvc pull` or `make repro`.
"""

from __future__ import annotations

import pytest

from tests.unit.test_architecture import REPO


def _records():
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    missing, stale = [], []
    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            if not stage.cmd:
                continue
            code = [d for d in stage.deps if not str(d.def_path).startswith("data/")]
            if any(not isinstance(d, ParamsDependency) and not d.hash_info for d in code):
                missing.append(stage.addressing)
                continue
            changed = {}
            for dep in code:
                changed.update(dep.status())
            if changed:
                stale.append(f"{stage.addressing}: {changed}")
    return missing, stale


@pytest.fixture(scope="module")
def records():
    return _records()


def test_every_stage_instance_has_a_record(records):
    missing, _ = records
    assert not missing, (f"dvc.lock has no record of {len(missing)} stage instances: {missing[:8]} "
                         "(run `make repro` and commit dvc.lock)")


def test_every_record_is_of_the_committed_code_and_params(records):
    _, stale = records
    assert not stale, (f"dvc.lock is older than the code or params of {len(stale)} stage instances "
                       f"(run `make repro` and commit dvc.lock): {stale[:5]}")
