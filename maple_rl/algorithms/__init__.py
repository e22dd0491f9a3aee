"""The algorithm math, pure functions over tensors selected by name from the config:
advantage estimators, policy losses and KL estimators, MSSR's entropy shaping, mixture and
adaptive stratum weights, zero-variance filtering, and chunked token log-probs."""
