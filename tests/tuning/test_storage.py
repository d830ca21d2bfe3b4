"""Sweeps stored by URI (:mod:`tuning.storage`): local folders, ``file://`` and S3 against a
real S3-compatible server (moto's, on 127.0.0.1), and storages that cannot be used failing
before Ray starts."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from sweep_drivers import imm_ray, kill_once_two_finished, recorded_finished, start_sweep
from test_results import assert_aggregates_to

from imm_ray import results
from imm_ray.cli import main
from tuning import storage
from tuning.storage import StorageError, check_readable, check_writable, resolve

REPO = Path(__file__).resolve().parents[2]
SWEEP = """\
name: tiny
epochs: [3, 6]
seeds: 20
seeds_per_trial: 1
settings:
  - label: No IMM
    imm: false
  - label: IMM
"""
#: The S3 sweep: figure2 (15 dataset sizes from 10 to 500 epochs, the λ rule) on 8 seeds,
#: a trial per setting and seed, so that a kill lands between trials.
FIGURE2 = ["figure2", "--seeds", "4", "--seeds-per-trial", "1"]
TRIALS = 8  # 2 settings × 4 seeds
#: Variables that would give S3 credentials or a region from outside the test.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, started for this module and stopped by its PID."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1"]
            + ["-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def s3_environment(endpoint: str, home: Path, credentials: bool = True) -> dict[str, str]:
    """This process's environment with S3 at ``endpoint``, fake credentials (or none), a
    region, and the EC2 metadata service off, so that nothing but 127.0.0.1 is asked."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(home),
    )
    if credentials:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket on the module's S3 server, with this process's environment set to
    reach it; returns the bucket's name."""
    home = tmp_path / "home"
    home.mkdir()
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_environment(s3_endpoint, home).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    bucket = f"imm-{uuid.uuid4().hex[:12]}"
    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, allow_bucket_creation=True)
    s3.create_dir(bucket)
    return bucket


def test_local_paths_and_file_uris_resolve_to_absolute_local_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = resolve("results")
    assert relative.local and relative.scheme == ""
    assert str(relative) == relative.path == str(tmp_path / "results")
    assert os.fspath(relative / "tiny") == str(tmp_path / "results" / "tiny")
    assert resolve(f"file://{tmp_path}/results").path == relative.path
    assert resolve(Path("results")).path == relative.path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/sweeps").path == str(tmp_path / "sweeps")
    assert (relative / "tiny").name == "tiny"


def test_local_writes_replace_a_file_whole_and_leave_no_temporary_file(tmp_path, monkeypatch):
    folder = resolve(tmp_path / "sweep")
    target = folder / "summary.md"
    target.write_text("first\n")
    assert target.read_text() == "first\n" and target.is_file() and folder.is_dir()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        target.write_text("second\n")
    monkeypatch.undo()
    assert target.read_text() == "first\n"
    assert [entry.name for entry in folder.iterdir()] == ["summary.md"]
    (folder / "trial_1").mkdir()
    (folder / "trial_1" / "result.json").write_text("")
    assert [entry.name for entry in folder.subfolders()] == ["trial_1"]
    assert folder.files() == ["summary.md", "trial_1/result.json"]
    with pytest.raises(FileNotFoundError):
        (folder / "nothing.json").read_text()


def test_the_write_check_leaves_no_folder_of_its_own_behind(tmp_path):
    # A command may stop after the check (an unreachable cluster, SIGINT): the check must
    # not leave the storage folders it made to probe in.
    deep = resolve(str(tmp_path / "results" / "more"))
    check_writable(deep)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "kept.txt").write_text("a user's file")
    check_writable(deep)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["kept.txt"]
    check_writable(resolve(str(tmp_path / "results")))
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["kept.txt"]


def test_an_s3_location_reads_writes_and_lists_objects_in_its_bucket(s3, s3_endpoint):
    folder = resolve(f"s3://{s3}/results")
    assert folder.scheme == "s3" and not folder.local
    assert folder.path == f"{s3}/results" and str(folder) == f"s3://{s3}/results"
    check_writable(folder)
    (folder / "tiny" / "experiment.json").write_text('{"kind": "rl"}')
    (folder / "tiny" / "figure.png").write_bytes(b"\x89PNG")
    tiny = folder / "tiny"
    assert [e.name for e in tiny.iterdir()] == ["experiment.json", "figure.png"]
    assert (tiny / "experiment.json").read_text() == '{"kind": "rl"}'
    assert [e.name for e in folder.subfolders()] == ["tiny"]
    assert folder.files() == ["tiny/experiment.json", "tiny/figure.png"]
    # The write probe leaves nothing behind.
    assert [e.name for e in folder.iterdir()] == ["tiny"]
    with pytest.raises(TypeError, match="not a local path"):
        os.fspath(tiny)
    # What Tune is given travels to the trials pickled with its endpoint and without
    # credentials: each process reads its own.
    _, (options,) = pickle.loads(pickle.dumps(folder.filesystem)).__reduce__()
    assert options["endpoint_override"] == s3_endpoint
    assert options["access_key"] is None and options["secret_key"] is None


def test_storages_that_cannot_be_used_fail_naming_the_option(s3, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = {
        "foo://bucket/results": "--storage: unknown scheme 'foo' in 'foo://bucket/results'",
        "s3://": "--storage: 's3://' names no bucket",
        "s3://absent-bucket/results": "--storage: bucket 'absent-bucket' of "
        "s3://absent-bucket/results does not exist",
        "/proc/forbidden": "--storage: cannot write to /proc/forbidden: ",
        str(a_file): f"--storage: {a_file} is a file, not a folder",
        f"s3://{s3}": None,
    }
    (resolve(f"s3://{s3}") / "summary.md").write_text("")
    cases[f"s3://{s3}/summary.md"] = f"--storage: s3://{s3}/summary.md is a file, not a folder"
    for text, message in cases.items():
        if message is None:
            check_writable(resolve(text))
            continue
        with pytest.raises(StorageError) as caught:
            check_writable(resolve(text))
        assert str(caught.value).startswith(message), (text, str(caught.value))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=f"^--storage: no AWS credentials for s3://{s3}/r"):
        check_writable(resolve(f"s3://{s3}/results"))
    with pytest.raises(StorageError, match="^no AWS credentials"):
        check_readable(resolve(f"s3://{s3}/results", option=None), option=None)
    # Credentials in a profile file count (the AWS SDK reads it), without being read here.
    (Path(os.environ["HOME"]) / ".aws").mkdir()
    (Path(os.environ["HOME"]) / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    check_writable(resolve(f"s3://{s3}/results"))


def test_gcs_checks_give_up_within_seconds_instead_of_retrying_for_minutes():
    # Resolving opens no connection; only the checks' copy of the filesystem is bounded.
    location = resolve("gs://some-bucket/results")
    assert location.filesystem.type_name == "gcs" and str(location) == "gs://some-bucket/results"
    bounded = storage._for_checks(location)
    _, (options,) = bounded.filesystem.__reduce__()
    assert options["retry_time_limit"].total_seconds() == storage.GCS_CHECK_RETRY_SECONDS
    _, (options,) = location.filesystem.__reduce__()
    assert options["retry_time_limit"] is None


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


def test_sweep_and_report_reject_bad_storage_with_exit_2_before_ray_starts(
    s3, tmp_path, capsys, monkeypatch
):
    import tuning.sweep

    # Ray must never be started (another test of this session may have started it here).
    started = []
    monkeypatch.setattr(tuning.sweep, "init_ray", lambda *args, **kwargs: started.append(args))
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for text in ("foo://x/results", "s3://absent-bucket/results", "/proc/forbidden", str(a_file)):
        code, err = run_cli(capsys, "sweep", str(sweep), "--storage", text)
        assert code == 2 and err.startswith("imm-ray: error: --storage: "), err
        assert "Traceback" not in err
    for text, words in (
        ("foo://x/results/tiny", "unknown scheme 'foo'"),
        ("s3://absent-bucket/results/tiny", "bucket 'absent-bucket'"),
        (f"s3://{s3}/results/tiny", f"s3://{s3}/results/tiny holds no sweep"),
    ):
        code, err = run_cli(capsys, "report", text)
        assert code == 2 and err.startswith("imm-ray: error: ") and words in err, err
        assert "--storage" not in err
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    code, err = run_cli(capsys, "sweep", str(sweep), "--storage", f"s3://{s3}/results")
    assert code == 2 and err.startswith("imm-ray: error: --storage: no AWS credentials"), err
    assert started == []
    assert not list(resolve(f"s3://{s3}").iterdir()), "nothing may be written"


def local_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_sweep_on_s3_is_killed_resumed_and_reported_without_writing_the_local_disk(
    s3, s3_endpoint, tmp_path
):
    cwd, home = tmp_path / "cwd", tmp_path / "home-driver"
    cwd.mkdir()
    home.mkdir()
    # Ray's own temporary folder (its sockets need a short path), where Tune stages every
    # file before uploading it: the test looks there, and removes it.
    ray_tmp = Path(tempfile.mkdtemp(prefix="immray-s3-", dir="/tmp"))
    env = {
        **s3_environment(s3_endpoint, home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RAY_TMPDIR": str(ray_tmp),
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
    }
    uri = f"s3://{s3}/results"
    folder = resolve(f"{uri}/figure2")
    try:
        driver = start_sweep(
            *FIGURE2,
            "--storage",
            uri,
            cwd=cwd,
            env=env,
        )
        kill_once_two_finished(driver, folder, timeout=180)
        before = recorded_finished(folder)
        assert 2 <= len(before) < TRIALS, "the kill must land mid-sweep"

        resumed = imm_ray("sweep", *FIGURE2, "--storage", uri, "--resume", cwd=cwd, env=env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"table: {uri}/figure2/summary.md" in resumed.stdout
        after = recorded_finished(folder)
        assert len(after) == TRIALS
        assert {name: after[name] for name in before} == before, "a finished trial was rerun"
        rows = (folder / "summary.csv").read_text().splitlines()
        assert rows[0] == "setting,epochs,mean,p10,p90,seeds"
        assert len(rows) == 1 + 2 * 15 and all(row.endswith(",4") for row in rows[1:])
        assert "Partial" not in (folder / "summary.md").read_text()

        (folder / "summary.csv").unlink()
        (folder / "figure.png").unlink()
        report = imm_ray("report", f"{uri}/figure2", cwd=cwd, env=env)
        assert report.returncode == 0, report.stderr
        assert (folder / "summary.csv").read_text().splitlines() == rows
        assert (folder / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot: {uri}/figure2/figure.png" in report.stdout
        # Results as data, read from the bucket: the per-seed frame, and report's CSV of it.
        frame = results.load(f"{uri}/figure2")
        assert_aggregates_to(frame, "\n".join(rows) + "\n")
        printed = imm_ray("report", f"{uri}/figure2", "--format", "csv", cwd=cwd, env=env)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == frame.to_csv(index=False)

        # Nothing in the working folder (no "s3:" folder, no results/), and in HOME only
        # Ray's token, matplotlib's font cache and the empty log folders RLlib's Algorithm
        # makes in ~/ray_results; every result file Tune staged is in Ray's session folder.
        assert list(cwd.iterdir()) == []
        assert [
            name
            for name in local_files(home)
            if name != ".ray/auth_token" and not name.startswith(".cache/matplotlib/")
        ] == []
        staged = [name for name in local_files(ray_tmp) if name.endswith("result.json")]
        assert staged and all(
            name.startswith("ray/session_") and "/artifacts/" in name for name in staged
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
