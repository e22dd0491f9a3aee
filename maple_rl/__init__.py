"""maple_rl: modality-aware RL post-training (stratified MAPO) of omni models."""

from maple_data import __version__

__all__ = ["__version__"]
