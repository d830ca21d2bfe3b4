"""Env ids → MDP/POMDP pairs: the one place a new pair is registered.

Every pair has two gymnasium ids, one for its MDP env (full observation) and one for its
POMDP view (the same env wrapped in :class:`ContextObservation`). :func:`make_pair` maps
either id, with the env's config, to the :class:`~envs.pair.PomdpMdpPair` behind it, so a
trainer given only ``(env_id, env_config)`` can build the restricted model of its env.

Adding a new pair, with :mod:`envs.taxi` (gymnasium's Taxi-v3, destination hidden) as
the worked example:

1. subclass :class:`~envs.pair.PomdpMdpPair` as a frozen dataclass whose fields are the
   world's parameters (frozen: solvers cache their results per pair, so it must hash).
   ``Taxi`` has one field, ``trajectory_length`` (every pair has it: the gym env
   truncates after it), and reads every table from gymnasium's
   ``Taxi-v3`` (``unwrapped.P``, ``initial_state_distrib``) instead of retyping it;
2. fill in the tables: ``transition_matrix`` ``T[a, s, s']`` (Taxi's is
   :func:`~envs.pair.deterministic_transitions` of its ``next_state_table``), ``reward_matrix``
   ``R[a, s, s']`` (Taxi's reward is on ``(s, a)``, repeated over ``s'``),
   ``state_context`` (Taxi: ``(row, col, passenger)`` as one id, ``s // 4``),
   ``state_observation`` / ``observation_state`` (Taxi: the four coordinates ↔ gymnasium's
   state id);
3. override what differs from the grid's defaults: ``terminal_states`` (Taxi: the
   passenger delivered; absorbing with reward 0 in the tables), ``initial_belief``
   (gymnasium's start distribution), ``context_belief`` (the belief over the hidden part
   given a context; Taxi's default would fail on contexts no episode starts in, such as
   the passenger in the taxi) and ``evaluation_horizon`` (Taxi: whole episodes);
4. write the gym env, a :class:`~envs.tabular_env.TabularEnv` (which gives it ``reset``,
   ``step`` and ``state``, all from the pair's tables), whose ``__init__`` takes the pair's
   fields as keyword arguments (plus env-only ones such as ``render_mode``), builds the
   pair, keeps it as ``self.pair``, sets the observation and action spaces and calls
   ``_start_tables()`` (``TaxiEnv``); a test checks it against the original env
   (``tests/envs/test_taxi.py`` replays random actions in both);
5. call ``register_pair(mdp_id, pomdp_id, PairClass, EnvClass)`` at the bottom of this
   module (or anywhere imported by ``import envs``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.grid import ToroidalGrid, ToroidalGridEnv
from envs.pair import PomdpMdpPair
from envs.taxi import Taxi, TaxiEnv
from imm_ray.checks import ConfigError

MDP_ENV_ID = "imm_ray/ToroidalGrid-v0"
"""The toroidal grid MDP: observes (x, y)."""
POMDP_ENV_ID = "imm_ray/ToroidalGridPOMDP-v0"
"""The toroidal grid's POMDP view: observes x only."""
TAXI_MDP_ENV_ID = "imm_ray/Taxi-v0"
"""Gymnasium's Taxi-v3 as an MDP: observes (row, col, passenger, destination)."""
TAXI_POMDP_ENV_ID = "imm_ray/TaxiPOMDP-v0"
"""Taxi's POMDP view: observes (row, col, passenger), the destination hidden."""


class ContextObservation(gym.ObservationWrapper):
    """The POMDP view of a pair's MDP env: observes the restricted context id only.

    Works on any env whose ``unwrapped.pair`` is a :class:`PomdpMdpPair`; the context of an
    observation is ``pair.state_context()[pair.observation_state(obs)]``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        pair = getattr(env.unwrapped, "pair", None)
        if not isinstance(pair, PomdpMdpPair):
            raise TypeError(
                f"ContextObservation needs an env whose unwrapped.pair is a PomdpMdpPair, "
                f"got {type(pair).__name__}"
            )
        self.pair = pair
        self.observation_space = spaces.Discrete(pair.n_contexts)
        self._context = pair.state_context()

    def observation(self, observation: Any) -> np.int64:
        state = int(self.pair.observation_state(np.asarray(observation)[None])[0])
        return np.int64(self._context[state])


@dataclass(frozen=True)
class PairSpec:
    """One registered pair: its two env ids and the classes that build it."""

    mdp_id: str
    """Gymnasium id of the MDP env."""
    pomdp_id: str
    """Gymnasium id of the POMDP view."""
    pair_cls: type[PomdpMdpPair]
    """Builds the pair from the env config's world parameters."""
    env_cls: type[gym.Env]
    """The MDP env; its ``__init__`` keywords are the allowed env config keys."""

    def pair_keys(self) -> frozenset[str]:
        return frozenset(_keywords(self.pair_cls))

    def env_keys(self) -> frozenset[str]:
        return frozenset(_keywords(self.env_cls))


_SPECS: dict[str, PairSpec] = {}


def _keywords(cls: type) -> list[str]:
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_pomdp_env(env_cls: type[gym.Env], **kwargs: Any) -> gym.Env:
    """The POMDP view's entry point: ``ContextObservation(env_cls(**kwargs))``."""
    return ContextObservation(env_cls(**kwargs))


def register_pair(
    mdp_id: str, pomdp_id: str, pair_cls: type[PomdpMdpPair], env_cls: type[gym.Env]
) -> None:
    """Registers both gymnasium ids of a pair and maps them to ``pair_cls`` for :func:`make_pair`.

    Idempotent for the same arguments; ids already in ``gymnasium.registry`` are not
    registered again. Re-using an id for a different pair raises ``ValueError``.
    """
    spec = PairSpec(mdp_id, pomdp_id, pair_cls, env_cls)
    for env_id in (mdp_id, pomdp_id):
        if env_id in _SPECS and _SPECS[env_id] != spec:
            raise ValueError(f"env id {env_id!r} is already registered for another pair")
    _SPECS[mdp_id] = _SPECS[pomdp_id] = spec
    if mdp_id not in gym.registry:
        gym.register(id=mdp_id, entry_point=env_cls)
    if pomdp_id not in gym.registry:
        gym.register(id=pomdp_id, entry_point=functools.partial(make_pomdp_env, env_cls))


def known_env_ids() -> tuple[str, ...]:
    """Every registered id, MDP and POMDP, in registration order."""
    return tuple(_SPECS)


def pair_spec(env_id: str) -> PairSpec:
    """The registration behind ``env_id``; ``ValueError`` listing the known ids if none."""
    if env_id not in _SPECS:
        raise ConfigError(
            "env", f"unknown env id {env_id!r}; known ids: {', '.join(known_env_ids())}"
        )
    return _SPECS[env_id]


def make_mdp_pair(env_id: Any, env_config: Mapping[str, Any] | None = None) -> PomdpMdpPair:
    """:func:`make_pair` for an id that must name a pair's MDP (the env a full-state policy
    trains on), with errors that list the MDP ids."""
    if not isinstance(env_id, str) or env_id not in _SPECS:
        mdp_ids = sorted({spec.mdp_id for spec in _SPECS.values()})
        raise ConfigError(
            "env",
            f"env: unknown env id {env_id!r}; the MDP ids of the registered pairs are "
            f"{', '.join(mdp_ids)}",
        )
    if _SPECS[env_id].mdp_id != env_id:
        raise ConfigError(
            "env",
            f"env must be an MDP id (the policy observes the full state), got the POMDP id "
            f"{env_id!r}",
        )
    return make_pair(env_id, env_config)


def make_pair(env_id: str, env_config: Mapping[str, Any] | None = None) -> PomdpMdpPair:
    """The pair behind ``env_id`` (MDP or POMDP id), built from the env's config.

    Keys the env takes but the pair does not (e.g. ``render_mode``) are ignored; any other
    unknown key raises ``ValueError`` naming it and the allowed keys.
    """
    spec = pair_spec(env_id)
    pair_keys, allowed = spec.pair_keys(), spec.pair_keys() | spec.env_keys()
    config = dict(env_config or {})
    for key in config:
        if key not in allowed:
            raise ConfigError(
                key,
                f"unknown env_config key {key!r} for {env_id}; "
                f"allowed keys: {', '.join(sorted(allowed))}",
            )
    return spec.pair_cls(**{k: v for k, v in config.items() if k in pair_keys})


register_pair(MDP_ENV_ID, POMDP_ENV_ID, ToroidalGrid, ToroidalGridEnv)
register_pair(TAXI_MDP_ENV_ID, TAXI_POMDP_ENV_ID, Taxi, TaxiEnv)
