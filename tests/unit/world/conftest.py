"""Shared fixtures: one default-size world per test session (it builds in a few seconds)."""

from __future__ import annotations

import pytest

from alignpipe.config import WorldSection
from alignpipe.world import Judge, Oracle, build_world


@pytest.fixture(scope="session")
def world():
    return build_world(1234, WorldSection())


@pytest.fixture(scope="session")
def oracle(world):
    return Oracle(world.kb)


@pytest.fixture(scope="session")
def judge(world):
    return Judge(world.kb)


@pytest.fixture(scope="session")
def records(world):
    return world.train + world.eval
