"""A trial's checkpoint is never written over: its next one goes to a folder not yet used.

Tune names a trial's checkpoints ``checkpoint_000000``, ``checkpoint_000001``, … by an
index that the trial's worker and the driver each keep, and a worker taking up a trial
again (a PBT member resumed, an actor reused, a sweep resumed with ``--resume``) starts
from the driver's. The two drift apart where the driver drops a checkpoint the worker has
already stored, which synchronous PBT does: a member that reaches a perturbation while its
pause-checkpoint is still being saved is saved a second time for PBT, and the pause that
follows stops the worker before the second save is registered. PBT has by then handed that
second checkpoint to a member that copies it; the saved member, taken up again from the
driver's older index, stored its next checkpoint in the same folder, and a copying member
that started after it restored the later weights under the earlier time: its search took
another course (what a killed and resumed PBT search showed, its trials run in another
order). A checkpoint a killed driver never registered is left in the trial's folder too.

:func:`skip_written_checkpoints` moves a worker's index past every folder already written
before it saves (class trainables: in ``save_checkpoint``; function trainables: before
``tune.report`` with a checkpoint, :func:`report_checkpoint`). A skipped folder stays: no
trial's record lists it, so Tune never deletes it.
"""

from __future__ import annotations

from typing import Any

from imm_ray import _compat


def skip_written_checkpoints(storage: Any) -> int:
    """Advances ``storage``'s checkpoint index (a Tune ``StorageContext``, or ``None``
    outside Tune) so that the next checkpoint's folder is one not yet in the trial's
    folder; returns how many folders were skipped. Where the private path is not allowed
    (:func:`imm_ray._compat.tune_checkpoint_index`), Tune's own index is kept."""
    if storage is None or not _compat.tune_checkpoint_index():
        return 0
    from pyarrow.fs import FileType
    from ray.train._internal.storage import StorageContext

    skipped = 0
    filesystem = storage.storage_filesystem
    while True:
        name = StorageContext._make_checkpoint_dir_name(storage.current_checkpoint_index + 1)
        path = f"{storage.trial_fs_path.rstrip('/')}/{name}"
        if filesystem.get_file_info(path).type == FileType.NotFound:
            return skipped
        storage.current_checkpoint_index += 1
        skipped += 1


def report_checkpoint(metrics: dict[str, Any], checkpoint: Any) -> None:
    """``tune.report(metrics, checkpoint=checkpoint)`` from a function trainable, its
    checkpoint stored in a folder not yet written (see the module)."""
    from ray import tune

    if checkpoint is not None and _compat.tune_checkpoint_index():
        from ray.train._internal.session import get_session

        session = get_session()
        skip_written_checkpoints(getattr(session, "storage", None))
    tune.report(metrics, checkpoint=checkpoint)
