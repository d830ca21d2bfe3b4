"""Sweeps: experiment definitions, running them on Ray, and aggregating seeds into tables."""
