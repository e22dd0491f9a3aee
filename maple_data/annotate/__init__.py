"""Ablation inference and RMT proposals (`maple-data annotate` / `propose`)."""
