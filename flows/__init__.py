"""Prefect flows, one per pipeline stage: `python -m flows.<stage>`."""
