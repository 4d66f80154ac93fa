"""Evaluation: how good a movie is, measured against its own story (docs/eval.md has every formula)."""
