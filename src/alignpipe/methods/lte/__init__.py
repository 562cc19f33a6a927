"""LTE (YJiangcm/LTE), learning to edit: edit records (``records``), the BM25 edit store (``retrieve``), the
edit-following template (``template``) and edit metrics (``metrics``)."""
