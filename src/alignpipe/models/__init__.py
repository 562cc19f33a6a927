"""Models: the built-in tokenizer and Llama model, loading hub/local models, and batched chat generation.

Public API (the contracts other packages use)::

    from alignpipe.models import load_model, generate, sample
    model, tok = load_model("data/base/model", params.model)           # left padding, pad + chat template set
    texts = generate(model, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=64, batch_size=16)

Every training stage writes its model with :func:`alignpipe.models.save.save`; the ``base`` stage that builds the
model is :mod:`alignpipe.stages.base`.
"""

from alignpipe.models.generate import generate, sample
from alignpipe.models.load import load_model

__all__ = ["generate", "load_model", "sample"]
