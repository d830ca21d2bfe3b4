"""The pomdp-py model of a pair agrees with the gym env, and exports to a .pomdp file."""

from __future__ import annotations

import numpy as np
import pomdp_py
import pytest

from envs import ContextObservation, ToroidalGrid, ToroidalGridEnv
from envs.tabular import Action, Observation, State, build_problem, export_pomdp_file

SIZE = 4


@pytest.fixture(scope="module")
def problem() -> pomdp_py.POMDP:
    return build_problem(ToroidalGrid(size=SIZE), seed=0)


def test_index_objects_hash_by_kind_and_index() -> None:
    assert State(3) == State(3) and hash(State(3)) == hash(State(3))
    assert State(3) != Action(3) and State(3) != 3
    assert len({State(1), State(1), Observation(1)}) == 2
    assert (repr(Action(2)), str(Action(2)), str(Observation(0))) == ("Action(2)", "a2", "o0")
    assert isinstance(State(0), pomdp_py.State)


def test_model_matches_every_env_step(problem) -> None:
    """From every state with every action: the env's arrival, reward and POMDP observation
    are the only outcomes the tabular model gives positive probability, with probability 1."""
    agent = problem.agent
    env = ContextObservation(ToroidalGridEnv(size=SIZE))
    mdp = env.unwrapped
    states, observations = agent.all_states, agent.all_observations
    for s in range(SIZE * SIZE):
        for a in range(4):
            env.reset(options={"state": s})
            context, reward, *_ = env.step(a)
            arrived = mdp.state
            probs = [agent.transition_model.probability(t, State(s), Action(a)) for t in states]
            assert probs == [float(t.index == arrived) for t in states]
            landed = State(arrived)
            seen = [agent.observation_model.probability(o, landed, Action(a)) for o in observations]
            assert seen == [float(o.index == context) for o in observations]
            assert agent.reward_model.sample(State(s), Action(a), State(arrived)) == reward
            assert agent.transition_model.sample(State(s), Action(a)) == State(arrived)
            assert agent.observation_model.sample(State(arrived), Action(a)) == Observation(context)


def test_sampling_follows_a_stochastic_table() -> None:
    """On a pair with a random transition table, samples match its probabilities."""

    class Noisy(ToroidalGrid):
        def transition_matrix(self) -> np.ndarray:
            table = np.random.default_rng(0).random((4, self.n_states, self.n_states))
            return table / table.sum(-1, keepdims=True)

    pair = Noisy(size=2)
    model = build_problem(pair, seed=1).agent.transition_model
    draws = [model.sample(State(1), Action(2)).index for _ in range(20_000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.allclose(freq, pair.transition_matrix()[2, 1], atol=0.015)


def test_seeds_fix_the_rollout() -> None:
    def rollout(seed: int) -> list[int]:
        problem = build_problem(ToroidalGrid(size=SIZE), seed=seed)
        state, visited = problem.env.state, []
        for _ in range(10):
            action = problem.agent.policy_model.rollout(state)
            state = problem.agent.transition_model.sample(state, action)
            visited.append(state.index)
        return visited

    assert rollout(3) == rollout(3)
    assert rollout(3) != rollout(4)


def test_problem_starts_from_the_initial_belief(problem) -> None:
    belief = problem.agent.belief
    assert isinstance(belief, pomdp_py.Histogram)
    assert [belief[State(s)] for s in range(SIZE * SIZE)] == [1 / SIZE**2] * SIZE**2
    assert build_problem(ToroidalGrid(size=SIZE), init_state=5).env.state == State(5)
    assert problem.agent.all_actions == [Action(a) for a in range(4)]
    with pytest.raises(ValueError, match=r"init_state must be in \[0, 16\), got 16"):
        build_problem(ToroidalGrid(size=SIZE), init_state=16)


def _parse_pomdp_file(text: str) -> dict:
    """A reader for the subset of Cassandra's .pomdp format that to_pomdp_file writes:
    ``key: values`` headers and ``T|O|R : k1 : k2 : ... klast value`` entries."""
    parsed: dict = {"T": {}, "O": {}, "R": {}}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(":")]
        if fields[0] in parsed:
            *keys, last = fields[1:]
            name, value = last.split()
            parsed[fields[0]][(*keys, name)] = float(value)
        else:
            parsed[fields[0]] = fields[1].split()
    return parsed


def test_pomdp_file_holds_the_tables(tmp_path) -> None:
    pair = ToroidalGrid(size=3, reward_variance=0.3)
    path = tmp_path / "grid.pomdp"
    states, actions, observations = export_pomdp_file(pair, path, discount_factor=0.9)
    parsed = _parse_pomdp_file(path.read_text())
    assert parsed["discount"] == ["0.900000000"] and parsed["values"] == ["reward"]
    assert parsed["states"] == [f"s{s}" for s in range(9)] == [str(s) for s in states]
    assert parsed["actions"] == ["a0", "a1", "a2", "a3"] == [str(a) for a in actions]
    assert parsed["observations"] == ["o0", "o1", "o2"] == [str(o) for o in observations]
    assert np.allclose([float(p) for p in parsed["start"]], 1 / 9)
    trans, obs, rew = pair.transition_matrix(), pair.observation_matrix(), pair.reward_matrix()
    assert len(parsed["T"]) == trans.size and len(parsed["O"]) == obs.size
    for (a, s, t), p in parsed["T"].items():
        assert p == trans[int(a[1:]), int(s[1:]), int(t[1:])]
    for (a, t, o), p in parsed["O"].items():
        assert p == obs[int(a[1:]), int(t[1:]), int(o[1:])]
    for (a, s, t, o), r in parsed["R"].items():
        assert o == "*" and r == pytest.approx(rew[int(a[1:]), int(s[1:]), int(t[1:])], abs=1e-9)


def test_export_checks_the_discount(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"discount_factor must be in \(0, 1\], got 1.5"):
        export_pomdp_file(ToroidalGrid(size=2), tmp_path / "x.pomdp", 1.5)
