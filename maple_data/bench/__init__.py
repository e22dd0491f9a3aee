"""The benchmark: `build-bench`, the dataset card, `stats`, `publish`."""
