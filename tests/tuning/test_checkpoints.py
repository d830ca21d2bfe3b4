"""A trial's checkpoint is never written over (tuning.checkpoints): a worker taken up again
from the driver's older checkpoint index stores its next checkpoint in a new folder, for
class trainables (Tune's own ``Trainable.save``) and function trainables (``tune.report``
in a real Tune run). The RL search trial's: tests/tuning/test_search.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ray import tune
from ray.train._internal.storage import StorageContext

from imm_ray import _compat
from tuning.checkpoints import report_checkpoint, skip_written_checkpoints


class Counter(tune.Trainable):
    """Counts its steps; a checkpoint holds the count (stored past written folders, as
    RLSearchTrainable's)."""

    def setup(self, config):
        self.count = 0

    def step(self):
        self.count += 1
        return {"count": self.count}

    def save_checkpoint(self, checkpoint_dir):
        skip_written_checkpoints(getattr(self, "_storage", None))
        Path(checkpoint_dir, "count.json").write_text(json.dumps(self.count))

    def load_checkpoint(self, checkpoint_dir):
        self.count = json.loads(Path(checkpoint_dir, "count.json").read_text())

    def reset_config(self, new_config):
        return True


def stored_counts(storage: StorageContext) -> dict[str, int]:
    folder = Path(storage.trial_fs_path)
    return {
        entry.name: json.loads((entry / "count.json").read_text())
        for entry in sorted(folder.glob("checkpoint_*"))
    }


@pytest.mark.parametrize("private", [True, False], ids=["skips", "tune-fallback"])
def test_a_worker_taken_up_from_an_older_index_stores_its_checkpoint_in_a_new_folder(
    ray_session, tmp_path, monkeypatch, private
):
    """What synchronous PBT does to a member (see tuning.checkpoints): the worker stores two
    checkpoints, the driver registers only the first, and the worker is taken up again
    (reset, as Tune reuses an actor) from the driver's index. Its next checkpoint goes to
    a new folder, and the unregistered one, which another member may be restoring, keeps
    its contents. Tune's own index (the fallback) writes over it: the defect."""
    monkeypatch.setattr(_compat, "tune_checkpoint_index", lambda: private)
    storage = StorageContext(
        storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="member"
    )
    worker = Counter(config={}, storage=storage)
    driver = copy.copy(storage)
    worker.train()
    registered = worker.save()
    driver.current_checkpoint_index += 1  # the driver registers the first checkpoint
    worker.train()
    copied = worker.save()  # dropped by the driver; handed to a copying member
    assert Path(registered.checkpoint.path).name == "checkpoint_000000"
    assert Path(copied.checkpoint.path).name == "checkpoint_000001"
    worker.reset({}, storage=copy.copy(driver))
    worker.restore(registered)
    worker.train()
    worker.train()
    later = worker.save()
    if private:
        assert Path(later.checkpoint.path).name == "checkpoint_000002"
        assert stored_counts(storage) == {
            "checkpoint_000000": 1,
            "checkpoint_000001": 2,
            "checkpoint_000002": 3,
        }
    else:
        assert Path(later.checkpoint.path).name == "checkpoint_000001"
        assert stored_counts(storage)["checkpoint_000001"] == 3
    restored = Counter(config={}, storage=copy.copy(storage))
    restored.restore(copied)
    assert restored.count == (2 if private else 3)


def function_member(config):
    """A function trainable whose trial folder already holds checkpoint_000000 (a folder
    a dropped registration left) when it reports its first checkpoint."""
    trial_folder = Path(tune.get_context().get_storage().trial_fs_path)
    written = trial_folder / "checkpoint_000000"
    written.mkdir(parents=True, exist_ok=True)
    (written / "count.json").write_text("99")
    folder = Path(config["scratch"]) / "out"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "count.json").write_text("1")
    report_checkpoint({"count": 1}, tune.Checkpoint.from_directory(str(folder)))


def test_a_function_trainable_reports_its_checkpoint_past_written_folders(ray_session, tmp_path):
    import sys

    from ray import cloudpickle

    # Ray's workers cannot import this test module: the trainable travels by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    results = tune.Tuner(
        function_member,
        param_space={"scratch": str(tmp_path / "scratch")},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "storage"), name="fn"),
    ).fit()
    result = results[0]
    assert result.error is None, result.error
    assert Path(result.checkpoint.path).name == "checkpoint_000001"
    trial_folder = Path(result.checkpoint.path).parent
    assert (trial_folder / "checkpoint_000000" / "count.json").read_text() == "99"
    assert (trial_folder / "checkpoint_000001" / "count.json").read_text() == "1"
