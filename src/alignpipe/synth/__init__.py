"""Data synthesis over the LLM roles: WebR (web reconstruction) now; Lion (adversarial distillation) next.

The ``synthesize`` stage entry is :func:`alignpipe.synth.stage.run`.
"""
