"""Operations around the pipeline, not part of the ML library: repairs of DVC's and git's lock files after a crash
(``dvcstate``), the network audit (``netaudit``) and per-run records (``runlog``).

Used by ``flows/``, the Makefile and the tests; ``alignpipe`` never imports this package (tests/unit/test_architecture.py).
"""
