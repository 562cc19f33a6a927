"""Reward model and per-token reward scores (ALLO key tokens and token weights r_t)."""
