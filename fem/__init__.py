"""fem: a reproducible pipeline for fully-explored masked language model pre-training."""

__version__ = "0.1.0"
