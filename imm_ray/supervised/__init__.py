"""Supervised IMM experiments as Tune trainables (the logistic-regression toy problem)."""
