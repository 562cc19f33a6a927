"""Preference pairs: sample K responses per prompt from the policy, label them, pair chosen/rejected."""

from alignpipe.prefs.pairs import build_pairs, response_score

__all__ = ["build_pairs", "response_score"]
