"""MovieDreamer: hierarchical story-to-movie generation."""

__version__ = "0.1.0"
