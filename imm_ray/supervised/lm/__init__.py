"""Language modelling data: PTB-format corpora and synthetic corpora from a known source."""
