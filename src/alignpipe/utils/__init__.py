"""Shared helpers: atomic artifacts, JSON/JSONL I/O with precise errors, seeding, checkpoints."""
