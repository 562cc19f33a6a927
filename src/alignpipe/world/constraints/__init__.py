"""Constraint types in FollowBench's categories, each with sampling, phrasing, a verifier and oracle hooks.

``REGISTRY`` maps a type name (the ``type`` field of a record's constraint) to its :class:`ConstraintType`;
verifiers are rebuilt from ``type`` + ``params`` alone, so evaluation needs only the instruction files.
The "mixed" category has no types of its own: its groups draw from content, situation, style and format.
"""

from alignpipe.world.constraints import content, example, format, situation, style  # noqa: F401  (registers)
from alignpipe.world.constraints.base import (
    CONSTRAINT_CATEGORIES,
    REGISTRY,
    ConstraintType,
    Ctx,
    get_type,
    sentences,
    types_in,
    words,
)

# Every string the constraint types can put into a response (the judge's vocabulary is built from these).
VOCAB = (content.VOCAB, situation.VOCAB, style.VOCAB, format.VOCAB, example.VOCAB)

__all__ = ["CONSTRAINT_CATEGORIES", "REGISTRY", "VOCAB", "ConstraintType", "Ctx", "get_type", "sentences", "types_in",
           "words"]
