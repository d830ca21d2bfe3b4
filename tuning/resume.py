"""What ``--resume`` mends in a stored sweep before Tune restores it.

Tune's driver stages a sweep's files (its experiment state, every trial's ``result.json``)
in Ray's session folder and copies that folder to the storage file by file, about once a
second. A driver that is killed (SIGKILL, a lost head node) rather than interrupted leaves
two gaps, far likelier on an object store, where a copy takes seconds, than on a local
disk:

1. The copy in flight may have stored the new experiment state, which records a trial as
   finished, but not yet that trial's ``result.json``. Tune would not run the trial again
   and its results would be lost. :func:`mend_before_resume` marks such a trial pending
   again in the newest state, so that the resumed sweep runs it (from its last checkpoint,
   or from the start: trials are deterministic).
2. A trial that runs again logs into the new Ray session's staging folder, whose
   ``result.json`` then replaces the stored one: the rows it reported before the kill
   would be lost (an LM trial resumed from epoch k reports only the epochs after k). The
   stored rows of every trial that will run again are kept beside it as
   ``result-before-resume-<n>.json``, which :func:`tuning.report.read_trials` reads too.
3. The stored state lists each trial's kept checkpoints as they were when it was last
   copied; the driver may have saved newer ones since and deleted the oldest (Tune keeps
   only the newest few). The resumed driver, registering a trial's next checkpoint,
   deletes the oldest one the state lists, fails on the missing folder, and skips the
   rest of the registration: the trial's checkpoint counter stays behind, so its next
   checkpoint overwrites the one before, and a PBT member that copies the earlier one
   gets the later (its search then takes another course, or waits for ever).
   :func:`forget_deleted_checkpoints` drops such checkpoints from the state.
4. A search's searcher and its trial generator keep states of their own, which Tune
   writes beside the experiment state and copies to the storage separately: the stored
   ones may be older or newer than the stored trials. The searcher is rebuilt from the
   trials (:meth:`tuning.search_algorithms.OrderedSearch.restore_from_dir`), and
   :func:`count_generated_trials` sets the generator's count of the trials it created to
   the number the trials' state holds.
   Where the stored experiment state is the older, the trials created after it have
   folders it does not list; the resumed search creates them again (as new trials, with
   the same configurations), and :func:`set_aside_untracked_trials` renames the old
   folders' ``result.json`` to ``result-not-resumed.json``, which reports do not read.
"""

from __future__ import annotations

import json

from tuning.report import EARLIER_RESULTS_PREFIX, RESULT_FILE, planned, read_trials, reported
from tuning.storage import Location

#: Tune's files of a sweep's experiment state start so (Tune restores the newest name).
STATE_PREFIX = "experiment_state-"
FINISHED, PENDING, ERROR = "TERMINATED", "PENDING", "ERROR"
#: Tune's files of a search's trial generator's state (its count of trials created).
GENERATOR_PREFIX = "search_gen_state-"
#: What an untracked trial folder's ``result.json`` becomes (see gap 4 above).
NOT_RESUMED_FILE = "result-not-resumed.json"


def newest_state(folder: Location) -> Location | None:
    """The experiment state Tune restores from (the newest by name), or None."""
    states = [
        entry
        for entry in folder.iterdir()
        if entry.name.startswith(STATE_PREFIX) and entry.name.endswith(".json")
    ]
    return max(states, key=lambda entry: entry.name) if states else None


def check_state(folder: Location) -> None:
    """A ``ValueError`` where the state Tune would restore ``folder`` from is empty or cut
    short: its driver was killed while Tune copied the state to the storage (Tune writes
    it in place), and Tune cannot restore a run from it."""
    newest = newest_state(folder)
    if newest is None:
        return
    try:
        json.loads(newest.read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            f"--resume: Tune's state {newest} is empty or cut short (its driver was killed "
            "while Tune was writing it), and Tune cannot continue the run from it; start it "
            "again with another --storage"
        ) from None


def forget_deleted_checkpoints(folder: Location) -> list[str]:
    """Drops from the newest state of ``folder`` every checkpoint a trial's record lists
    whose folder is gone (gap 3 above), except the trial's latest, which the trial
    continues from; returns the dropped checkpoints as ``<trial folder>/<checkpoint>``.
    Checkpoints are looked up by those two names in ``folder``, wherever the state says
    the sweep was stored before (it may have been moved since)."""
    from imm_ray import _compat

    newest = newest_state(folder)
    if newest is None or not _compat.tune_state_checkpoints():
        return []
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    state = json.loads(newest.read_text())
    dropped: list[str] = []
    for entry in state["trial_data"]:
        metadata = _TrainingRunMetadata.from_json_state(entry[1])
        manager = metadata.checkpoint_manager
        if manager is None:
            continue
        latest = manager.latest_checkpoint_result
        latest_path = latest.checkpoint.path if latest is not None else None
        kept = []
        for result in manager._checkpoint_results:
            name = "/".join(result.checkpoint.path.rstrip("/").split("/")[-2:])
            if result.checkpoint.path == latest_path or (folder / name).exists():
                kept.append(result)
            else:
                dropped.append(name)
        if len(kept) < len(manager._checkpoint_results):
            manager._checkpoint_results = kept
            metadata.invalidate_cache()
            entry[1] = metadata.get_json_state()
    if dropped:
        newest.write_text(json.dumps(state))
    return dropped


def count_generated_trials(folder: Location) -> bool:
    """Sets the count of trials created in the newest stored state of a search's trial
    generator to the number of trials in the newest experiment state (gap 4 above);
    returns whether it changed. An older count would have the resumed search create
    trials beyond its budget, a newer one fewer than it. A ``ValueError`` where the
    experiment state holds trials but the generator's state never reached the storage."""
    newest = newest_state(folder)
    if newest is None:
        return False
    try:
        count = len(json.loads(newest.read_text())["trial_data"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    states = [
        entry
        for entry in folder.iterdir()
        if entry.name.startswith(GENERATOR_PREFIX) and entry.name.endswith(".json")
    ]
    if not states:
        if count:
            raise ValueError(
                f"--resume: {folder} holds Tune's trials but not its search's state (its "
                "driver was killed before Tune stored it), and Tune cannot continue the "
                "search from them; start it again with another --storage"
            )
        return False
    import ray.cloudpickle as cloudpickle

    generator_state = max(states, key=lambda entry: entry.name)
    state = cloudpickle.loads(generator_state.read_bytes())
    if state.get("counter") == count and not state.get("finished"):
        return False
    state["counter"], state["finished"] = count, False
    generator_state.write_bytes(cloudpickle.dumps(state))
    return True


def set_aside_untracked_trials(folder: Location) -> list[str]:
    """Renames the ``result.json`` of every trial folder in ``folder`` that the newest
    experiment state does not list to :data:`NOT_RESUMED_FILE` (gap 4 above); returns
    those folders' names. Nothing is done where the state cannot be read."""
    newest = newest_state(folder)
    if newest is None:
        return []
    try:
        entries = json.loads(newest.read_text())["trial_data"]
        listed = {json.loads(trial)["relative_logdir"] for trial, _ in entries}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return []
    untracked = []
    for trial_folder in folder.subfolders():
        result = trial_folder / RESULT_FILE
        if trial_folder.name in listed or not result.exists():
            continue
        if not (trial_folder / "params.json").exists():
            continue
        (trial_folder / NOT_RESUMED_FILE).write_bytes(result.read_bytes())
        result.unlink()
        untracked.append(trial_folder.name)
    return untracked


def mend_search_before_resume(folder: Location) -> list[str]:
    """For a search: a finished trial whose stored ``result.json`` lacks its last result
    (a driver killed before Tune copied the file) gets that row back from the experiment
    state, which holds it; returns those trials' folder names. (A search trial's report
    reads its last row; rerunning the trial from its last checkpoint would not report it
    again.)"""
    newest = newest_state(folder)
    if newest is None:
        return []
    try:
        entries = json.loads(newest.read_text())["trial_data"]
        trials = [(json.loads(trial), json.loads(meta)) for trial, meta in entries]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return []
    mended = []
    for trial, meta in trials:
        last = meta.get("last_result")
        if trial.get("status") != FINISHED or not isinstance(last, dict) or not last:
            continue
        stored = folder / trial["relative_logdir"] / RESULT_FILE
        try:
            text = stored.read_text()
        except FileNotFoundError:
            text = ""
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if any(row.get("training_iteration") == last.get("training_iteration") for row in rows):
            continue
        stored.write_text(
            text + ("" if not text or text.endswith("\n") else "\n") + json.dumps(last) + "\n"
        )
        mended.append(trial["relative_logdir"])
    return mended


def mend_before_resume(folder: Location) -> list[str]:
    """Requeues the finished trials of ``folder`` whose stored results are incomplete, and
    keeps the stored rows of every trial that will run again; returns the requeued trials'
    folder names. A state Tune no longer writes in this shape is left as it is."""
    states = [
        entry
        for entry in folder.iterdir()
        if entry.name.startswith(STATE_PREFIX) and entry.name.endswith(".json")
    ]
    if not states:
        return []
    newest = max(states, key=lambda entry: entry.name)
    try:
        state = json.loads(newest.read_text())
        trials = [json.loads(entry[0]) for entry in state["trial_data"]]
        specs = [trial["config"]["trial"] for trial in trials]
        logdirs = [trial["relative_logdir"] for trial in trials]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError):
        return []
    stored = {found.folder: found.rows for found in read_trials(folder)}
    requeued = []
    for entry, trial, spec, logdir in zip(state["trial_data"], trials, specs, logdirs, strict=True):
        rows = stored.get(logdir, [])
        if trial["status"] == FINISHED and not planned(spec) <= reported(spec, rows):
            trial["status"] = PENDING
            entry[0] = json.dumps(trial)
            requeued.append(logdir)
        if trial["status"] != FINISHED and rows:
            _keep_rows(folder / logdir)
    if requeued:
        newest.write_text(json.dumps(state))
    return requeued


def _keep_rows(trial_folder: Location) -> None:
    """Copies the trial's ``result.json`` to the next free ``result-before-resume-<n>.json``."""
    kept = [e.name for e in trial_folder.iterdir() if e.name.startswith(EARLIER_RESULTS_PREFIX)]
    current = (trial_folder / RESULT_FILE).read_bytes()
    if current.strip():
        target = trial_folder / f"{EARLIER_RESULTS_PREFIX}{len(kept) + 1:03d}.json"
        target.write_bytes(current)
