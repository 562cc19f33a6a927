"""alignpipe: a reproducible pipeline for efficient, targeted alignment of large language models."""

__version__ = "0.1.0"
