"""Evaluation: FollowBench metrics with bootstrap intervals (``metrics``), the official FollowBench data, rules and
LLM judge (``followbench``), pairwise judging (``pairwise``) and a local model as a responder (``responder``).

The evaluate stage that runs them is :mod:`alignpipe.stages.evaluate`.
"""
