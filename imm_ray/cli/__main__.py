"""``python -m imm_ray.cli ARGS`` runs ``imm-ray ARGS``."""

from imm_ray.cli.program import run

run()
