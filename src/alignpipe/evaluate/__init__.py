"""Evaluation: generation over the FollowBench-style pool, verifiers, judge, metrics with bootstrap intervals.

``metrics`` holds the pure metric functions; ``stage`` the stage entry (``run``) and its steps.
"""
