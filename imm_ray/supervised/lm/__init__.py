"""LSTM language models with and without IMM (paper Sec. 7.2, App. D.2): PTB-format and
synthetic corpora, the model, its IMM branch, Kneser–Ney noising, perplexities and the
training loop. No Ray here: :mod:`tuning.lm` runs the training as Tune trainables.
"""
