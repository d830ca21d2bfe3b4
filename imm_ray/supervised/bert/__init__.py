"""BERT fine-tuning with the MLM loss and IMM within it (paper Sec. 7.2, Table 2, App. D.2.2).

No Ray here: :mod:`tuning.bert` runs these as Tune trainables.
"""
