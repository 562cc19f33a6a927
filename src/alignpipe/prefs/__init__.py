"""Preference pairs from labelled candidates (the preferences stage samples and labels them)."""

from alignpipe.prefs.pairs import Candidate, PairStats, build_pairs, pair_row

__all__ = ["Candidate", "PairStats", "build_pairs", "pair_row"]
