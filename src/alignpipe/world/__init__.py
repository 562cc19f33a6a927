"""The built-in world: a seeded fictional knowledge base, FollowBench-style instruction groups with
rule-based verifiers, an oracle teacher (and its corruptions), a rule-based judge, a pretraining corpus and
raw web pages. Everything is a deterministic function of ``(seed, WorldSection)``.

Example::

    from alignpipe.world import Judge, build_world, verify
    world = build_world(1234, WorldSection())
    record = world.eval[3]
    verify(record, response)                 # [True, False, ...]
    Judge(world.kb).score(record, response)  # {"fluency": ..., "factuality": ..., "coherence": ...}
"""

from alignpipe.world.constraints import REGISTRY
from alignpipe.world.judge import Judge
from alignpipe.world.kb import KB, load_kb
from alignpipe.world.oracle import Oracle
from alignpipe.world.score import response_score
from alignpipe.world.verify import verify
from alignpipe.world.world import World, build_world, load_instructions

__all__ = ["KB", "REGISTRY", "Judge", "Oracle", "World", "build_world", "load_instructions", "load_kb",
           "response_score", "verify"]
