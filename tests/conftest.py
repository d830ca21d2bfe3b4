"""Shared fixtures: one real local Ray instance per test session, on loopback as imm-ray
starts it (:mod:`imm_ray.cluster`); and real multi-node clusters (:mod:`clusters`)."""

from __future__ import annotations

import os

import pytest

from imm_ray.cluster import init_ray, prefer_loopback

prefer_loopback()  # before any test module imports Ray
# Token authentication, Ray's default, from the start: Ray reads the mode once per process,
# and the first ray.init (the ray_session fixture's) sets it here. Without this, the test
# clusters this process starts (tests/clusters.py) had it or not by the order tests ran in.
os.environ.setdefault("RAY_AUTH_MODE", "token")

from clusters import cluster, job_cluster  # noqa: E402, F401 - fixtures for every module


@pytest.fixture(scope="session")
def ray_session():
    """A real embedded Ray with this machine's CPUs, shared by every test that asks for it."""
    import ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
