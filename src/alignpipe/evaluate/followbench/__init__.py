"""FollowBench on its official data (YJiangcm/FollowBench): loader, official rules, LLM judge, metrics, tables.

Modules: ``data`` (load + validate the six files), ``rules`` (rule-scored groups, official verdicts),
``judge`` (prompt template, judge protocol, output parsing, retry), ``score`` (per-response rows and metrics),
``tables`` (Table 2 layout, per-category table, radar plot), ``stage`` (the evaluate stage on this benchmark).
"""
