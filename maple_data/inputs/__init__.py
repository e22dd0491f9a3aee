"""The inputs: the QA file, its validation, synthetic corpora with known RMTs."""
