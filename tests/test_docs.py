"""The documentation: the site builds strictly (a broken link, anchor or API reference fails
it), every page is in its nav, the README stays short and links into it, and every worked
example of ``docs/extending.md`` runs and does what the page says it does."""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
#: Material for MkDocs prints an end-of-life banner on every build unless told not to.
QUIET_MKDOCS = {"NO_MKDOCS_2_WARNING": "1"}


def _run(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    """``args`` in a fresh process from the repository root (this session's environment:
    Ray's loopback switch and token mode, :mod:`conftest`; no ``RAY_ADDRESS``, so an
    example starts its own embedded Ray); fails with its output unless it exits 0."""
    result = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env},
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


class _Examples:
    """The worked examples, each started at once in a process of its own (they wait on
    their embedded Ray's start as much as they compute, so side by side they take about as
    long as the longest); :meth:`output` waits for one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        for name in ("new_pair", "new_restricted_model", "new_kind"):
            args = [str(folder / "kind")] if name == "new_kind" else []
            out, err = folder / f"{name}.out", folder / f"{name}.err"
            with out.open("w") as stdout, err.open("w") as stderr:
                process = subprocess.Popen(
                    [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                    cwd=ROOT,
                    stdout=stdout,
                    stderr=stderr,
                    text=True,
                    env=env,
                )
            self.processes[name] = (process, out, err)

    def output(self, name: str) -> str:
        """``docs/examples/<name>.py``'s output; fails with it unless it exits 0."""
        process, out, err = self.processes[name]
        process.wait(timeout=600)
        assert process.returncode == 0, (out.read_text()[-3000:], err.read_text()[-3000:])
        return out.read_text()

    def close(self) -> None:
        for process, _, _ in self.processes.values():
            if process.poll() is None:  # a test that failed before waiting for it
                process.terminate()
                process.wait(timeout=60)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    started = _Examples(tmp_path_factory.mktemp("examples"))
    yield started
    started.close()


def _example(examples: _Examples, name: str) -> dict[str, str]:
    """``docs/examples/<name>.py``'s ``key: value`` lines."""
    out = examples.output(name)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's ``toc`` gives a heading (its default ``slugify``)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def test_the_site_builds_strictly_with_the_api_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (make test installs it)")
    site = tmp_path / "site"
    _run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], 300, **QUIET_MKDOCS
    )
    # mkdocstrings rendered the docstrings, not an empty page: a function and a class.
    assert "imm_ray.imm.losses.imm_loss" in (site / "reference/imm/index.html").read_text()
    assert "envs.pair.PomdpMdpPair" in (site / "reference/envs/index.html").read_text()
    # The examples are included into the page, not linked: their code is on it.
    page = (site / "extending/index.html").read_text()
    assert "induced_expert_policy" in page and "TableExperiment" in page and "RingEnv" in page


def test_every_public_module_is_in_the_api_reference():
    """Each module of the packages (not a package's ``__init__``, not a private one, not
    the command line's, whose reference is its ``--help``) has a ``::: module`` entry."""
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), re.MULTILINE))
    modules = set()
    for package in ("imm_ray", "envs", "tuning"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if path.stem != "__init__" and not any(p.startswith("_") for p in parts):
                modules.add(".".join(parts))
    modules = {m for m in modules if not m.startswith("imm_ray.cli.")}
    assert len(modules) > 80
    assert sorted(modules - documented) == []


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = _nav_pages(config["nav"])
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(in_nav) == pages
    assert "tracking.md" in in_nav


def test_the_readme_is_short_keeps_the_two_commands_and_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "```bash\nmake run\n```" in readme and "```bash\nmake test\n```" in readme
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    into_docs = [link for link in links if link.startswith("docs/")]
    assert len(into_docs) >= 10
    for link in into_docs:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, link
    assert all(link.startswith(("docs/", "http://", "https://")) for link in links), links


@pytest.mark.parametrize(
    "page",
    ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))],
)
def test_every_imm_ray_command_of_the_readme_and_the_docs_parses(page):
    from imm_ray.cli import build_parser

    blocks = re.findall(r"```(?:bash|console|sh)\n(.*?)```", (ROOT / page).read_text(), re.DOTALL)
    # A command may go on over lines ending in a backslash.
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    commands = [line.strip() for line in lines if line.strip().startswith("imm-ray ")]
    if page == "README.md":
        assert len(commands) >= 5
    for command in commands:
        # A synopsis's alternatives (``--method none|imm``) stand for their first; ``...``
        # for more of the same.
        words = [w.split("|")[0] for w in shlex.split(command, comments=True)[1:] if w != "..."]
        try:
            build_parser().parse_args(words)
        except SystemExit as stop:
            if stop.code != 0:  # --help and --version exit 0
                pytest.fail(f"{page}'s {command!r} does not parse")


def test_the_new_pair_example_steps_solves_and_trains(examples):
    out = _example(examples, "new_pair")
    assert out["MDP observation"] == "[1, 1]"  # state 9: goal 1 (cell 6), cell 1
    assert out["POMDP observation"] == "2 reward: 0.0"  # one step right: cell 2, not its goal
    # The nearer goal, ties (cells 0 and 4) to the lowest action; wait on a goal.
    assert out["restricted policy"] == "left right stay left left right stay left"
    # By hand: per goal, start cells 1, 2, 3 collect 22 and cell 4 (or 0) 21 over 22 steps;
    # the other four never reach it. (2 · 87) / 16 starts.
    assert out["restricted policy alone"] == "10.875"
    reward, seeds = re.fullmatch(
        r"mean reward (\S+) over (\d+) seeds", out["IMM, 20 epochs"]
    ).groups()
    assert int(seeds) == 10 and 0.0 <= float(reward) <= 22.0


def test_the_new_restricted_model_example_helps_by_more_than_four_paired_standard_errors(
    examples,
):
    out = _example(examples, "new_restricted_model")
    assert out["target shape"] == "[11, 4], rows sum to 1: True"
    assert float(out["induced expert alone"]) < float(out["FIB argmax alone"])
    none, imm = map(
        float, re.fullmatch(r"no IMM (\S+), IMM (\S+)", out["50 epochs, 30 seeds"]).groups()
    )
    gain, se = map(
        float, re.fullmatch(r"(\S+) ± (\S+) \(paired standard error\)", out["IMM gain"]).groups()
    )
    assert imm > 2 * none and math.isclose(gain, imm - none, abs_tol=0.011)
    assert gain > 4 * se > 0


def test_the_new_kind_example_sweeps_and_writes_its_summary(examples):
    out = examples.output("new_kind")
    folder = examples.folder / "kind" / "table-demo"
    assert (folder / "summary.md").read_text() in out
    assert (folder / "figure.png").stat().st_size > 0
    with open(folder / "summary.csv") as handle:
        means = {
            (row["setting"], int(row["n"])): float(row["mean"]) for row in csv.DictReader(handle)
        }
    assert sorted({n for _, n in means}) == [10, 30, 100]
    gaps = {n: means["No IMM", n] - means["IMM", n] for n in (10, 30, 100)}
    assert all(gap > 0 for gap in gaps.values()), gaps  # IMM lowers the log-loss at every n
    assert gaps[10] > gaps[100], gaps  # most where data is scarce
    # The frame printed last (imm_ray.results.load) averages to the summary's means.
    for n in (10, 30, 100):
        row = re.search(rf"^{n}\s+(\S+)\s+(\S+)$", out, re.MULTILINE)
        assert row, out
        assert float(row[1]) == pytest.approx(means["IMM", n], abs=6e-4)
        assert float(row[2]) == pytest.approx(means["No IMM", n], abs=6e-4)
