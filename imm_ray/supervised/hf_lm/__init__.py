"""IMM for any Hugging Face language model, causal or masked, with the Kneser–Ney bigram
over the model's own token ids as the restricted model (issue 23, beyond the paper).

No Ray here.
"""
