"""MDP/POMDP pairs: one spec each gives a gym MDP env, its POMDP view and a pomdp-py model.

Importing this package registers the gymnasium ids of every pair (see :mod:`envs.registry`).
"""

from envs.grid import ACTION_NAMES, ToroidalGrid, ToroidalGridEnv
from envs.pair import PomdpMdpPair
from envs.registry import (
    MDP_ENV_ID,
    POMDP_ENV_ID,
    TAXI_MDP_ENV_ID,
    TAXI_POMDP_ENV_ID,
    ContextObservation,
    PairSpec,
    known_env_ids,
    make_mdp_pair,
    make_pair,
    make_pomdp_env,
    pair_spec,
    register_pair,
)
from envs.taxi import TAXI_ACTION_NAMES, Taxi, TaxiEnv

__all__ = [
    "ACTION_NAMES",
    "MDP_ENV_ID",
    "POMDP_ENV_ID",
    "TAXI_ACTION_NAMES",
    "TAXI_MDP_ENV_ID",
    "TAXI_POMDP_ENV_ID",
    "ContextObservation",
    "PairSpec",
    "PomdpMdpPair",
    "Taxi",
    "TaxiEnv",
    "ToroidalGrid",
    "ToroidalGridEnv",
    "known_env_ids",
    "make_mdp_pair",
    "make_pair",
    "make_pomdp_env",
    "pair_spec",
    "register_pair",
]
