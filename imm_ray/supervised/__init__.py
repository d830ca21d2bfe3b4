"""Supervised IMM experiments: the logistic-regression toy problem (:mod:`.logistic`), the
LSTM language models (:mod:`.lm`) and BERT fine-tuning (:mod:`.bert`). Their Tune
trainables are in :mod:`tuning`.
"""
