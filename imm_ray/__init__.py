"""imm-ray: Induced Model Matching on Ray: restricted models help train full-featured models."""

__version__ = "0.1.0"
