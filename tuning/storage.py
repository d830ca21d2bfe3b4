"""Where sweeps are stored: a local folder or an object store, through pyarrow's filesystems,
as Ray Tune stores them.

A storage text is what a user passes to ``--storage`` or ``imm-ray report``: a local path
(``results``, ``~/sweeps``), ``file:///abs/path``, or a URI of a filesystem pyarrow knows
(``s3://bucket/prefix``, ``gs://bucket/prefix``). S3 takes its credentials and endpoint from
the standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ...) and ``~/.aws``, as the AWS SDK does.

:func:`resolve` turns the text into a :class:`Location` (a pyarrow filesystem and a path on
it), which Tune is given as ``storage_filesystem`` and ``storage_path``: the filesystem
travels to the trials pickled with its endpoint, without credentials (each process reads its
own). :func:`check_writable` and :func:`check_readable` run on the driver before Ray starts,
so that a storage that cannot be used is a usage error (:class:`StorageError`), not a
traceback from a trial. Files are written whole: locally a temporary file renamed over the
target, on an object store one put (an object appears whole or not at all).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

from imm_ray._io import write_bytes_atomically

#: Schemes pyarrow's ``FileSystem.from_uri`` knows; another one is a typo, not a missing library.
KNOWN_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
#: Object stores whose first path component is a bucket.
BUCKET_SCHEMES = ("s3", "gs", "gcs")
#: A GCS request retries for up to 15 minutes by default; a check before a sweep gives up sooner.
GCS_CHECK_RETRY_SECONDS = 15
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PYARROW_ERRORS = (OSError, ValueError, pyarrow.ArrowException)


class StorageError(ValueError):
    """A storage that cannot be opened, read or written (a usage error: exit status 2)."""


@dataclass(frozen=True, eq=False)
class Location:
    """A folder or file on a pyarrow filesystem: ``str()`` is what a user would type again
    (a local absolute path, or ``scheme://path``); ``os.fspath()`` works for local ones."""

    filesystem: pafs.FileSystem
    path: str
    """The path on ``filesystem`` (for object stores ``bucket/key``, without the scheme)."""
    scheme: str = ""
    """The URI scheme a user gave, ``""`` for a local path."""

    @property
    def local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.path if self.local else f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:
        if not self.local:
            raise TypeError(f"{self} is not a local path")
        return self.path

    def __truediv__(self, name: str) -> Location:
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{name}", self.scheme)

    def _type(self) -> pafs.FileType:
        return self.filesystem.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def iterdir(self) -> list[Location]:
        """The entries of this folder, sorted by name; none when it does not exist."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        entries = sorted(info.base_name for info in self.filesystem.get_file_info(selector))
        return [self / name for name in entries]

    def subfolders(self) -> list[Location]:
        """The folders in this folder, sorted by name."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        return [self / name for name in names]

    def files(self) -> list[str]:
        """Every file under this folder, as paths relative to it, sorted (one recursive
        listing: on an object store a few requests, not one per folder)."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        start = len(self.path.rstrip("/")) + 1
        return sorted(
            info.path[start:]
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def mkdir(self) -> None:
        """Creates this folder and its parents (a no-op on object stores without folders)."""
        self.filesystem.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        """The file's content; ``FileNotFoundError`` when there is none."""
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Replaces the file with ``data`` whole: locally through a temporary file beside it
        (removed if the write fails), on an object store in one put."""
        if self.local:
            write_bytes_atomically(self.path, data)
            return
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def unlink(self) -> None:
        self.filesystem.delete_file(self.path)

    def remove(self) -> None:
        """Deletes this folder and everything in it; nothing when it does not exist."""
        if self.exists():
            self.filesystem.delete_dir(self.path)


def _prefix(option: str | None) -> str:
    return f"{option}: " if option else ""


def resolve(text: str | os.PathLike[str] | Location, option: str | None = "--storage") -> Location:
    """A storage text → its :class:`Location`; a local path is made absolute (``~``
    expanded). Opens no connection except where pyarrow's ``from_uri`` does (an ``s3://``
    URI with neither a region nor an endpoint asks AWS for the bucket's region).

    Raises :class:`StorageError` (its message prefixed with ``option``) for an unknown
    scheme, a URI pyarrow cannot open, or an object-store URI without a bucket.
    """
    if isinstance(text, Location):
        return text
    text = os.fspath(text)
    match = _URI.match(text)
    if match is None:
        return Location(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
    scheme = match.group(1).lower()
    if scheme not in KNOWN_SCHEMES:
        raise StorageError(
            f"{_prefix(option)}unknown scheme {scheme!r} in {text!r}: use a local path, "
            "file://, s3:// or gs://"
        )
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except _PYARROW_ERRORS as err:
        raise StorageError(f"{_prefix(option)}cannot open {text!r}: {err}") from None
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Location(filesystem, str(Path(path).resolve()))
    path = path.strip("/")
    if scheme in BUCKET_SCHEMES and not path:
        raise StorageError(f"{_prefix(option)}{text!r} names no bucket")
    return Location(filesystem, path, scheme)


def check_writable(location: Location, option: str | None = "--storage") -> None:
    """Fails with :class:`StorageError` unless a sweep can write under ``location``: not a
    file, its bucket exists, credentials are at hand, and a probe file can be written and
    deleted there. Folders made for the probe are removed again: a command that stops
    later, before writing anything, leaves nothing behind."""
    location = _for_checks(location)
    _check_credentials(location, option)
    _check_folder(location, option)
    made = _first_missing_folder(location)
    probe = location / f".imm-ray-write-test-{uuid.uuid4().hex}"
    try:
        location.mkdir()
        probe.write_bytes(b"")
        probe.unlink()
    except _PYARROW_ERRORS as err:
        raise StorageError(
            f"{_prefix(option)}cannot write to {location}: {err}{_credentials_hint(location)}"
        ) from None
    finally:
        if made is not None:
            made.remove()


def _first_missing_folder(location: Location) -> Location | None:
    """The outermost folder of a local ``location`` that does not exist yet (what
    ``mkdir`` would make first), or None: object stores have no folders to make."""
    if not location.local:
        return None
    missing = None
    path = Path(location.path)
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return None if missing is None else Location(location.filesystem, str(missing))


def check_readable(location: Location, option: str | None = None) -> None:
    """Fails with :class:`StorageError` unless ``location`` can be listed: not a file, its
    bucket exists, credentials are at hand. (A folder that does not exist lists empty.)"""
    location = _for_checks(location)
    _check_credentials(location, option)
    _check_folder(location, option)
    try:
        location.iterdir()
    except _PYARROW_ERRORS as err:
        raise StorageError(
            f"{_prefix(option)}cannot read {location}: {err}{_credentials_hint(location)}"
        ) from None


def _for_checks(location: Location) -> Location:
    """``location`` on a filesystem that gives up within :data:`GCS_CHECK_RETRY_SECONDS`
    where its requests would otherwise retry for minutes (GCS)."""
    if location.filesystem.type_name != "gcs":
        return location
    rebuild, (options,) = location.filesystem.__reduce__()
    if options.get("retry_time_limit") is not None:
        return location
    limit = timedelta(seconds=GCS_CHECK_RETRY_SECONDS)
    return replace(location, filesystem=rebuild({**options, "retry_time_limit": limit}))


def _check_folder(location: Location, option: str | None) -> None:
    """Not a file; on an object store, its bucket exists."""
    try:
        if location.is_file():
            raise StorageError(f"{_prefix(option)}{location} is a file, not a folder")
        if location.scheme in BUCKET_SCHEMES:
            bucket = location.path.split("/", 1)[0]
            if location.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StorageError(
                    f"{_prefix(option)}bucket {bucket!r} of {location} does not exist"
                )
    except _PYARROW_ERRORS as err:
        if isinstance(err, StorageError):
            raise
        raise StorageError(
            f"{_prefix(option)}cannot open {location}: {err}{_credentials_hint(location)}"
        ) from None


def _check_credentials(location: Location, option: str | None) -> None:
    """An S3 location with no credentials anywhere fails before any request.

    Without ``AWS_EC2_METADATA_DISABLED=true`` the AWS SDK would last ask the EC2 instance
    metadata service (169.254.169.254), which on EC2 is where an instance role's
    credentials come from; that cannot be known without asking it, so then the write probe
    decides (S3 refuses an unsigned write to a private bucket).
    """
    if location.scheme != "s3" or _aws_credentials_configured(location):
        return
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        raise StorageError(f"{_prefix(option)}no AWS credentials for {location}{_HINT}")


_HINT = (
    ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or a profile "
    "in ~/.aws/credentials"
)


def _credentials_hint(location: Location) -> str:
    if location.scheme == "s3" and not _aws_credentials_configured(location):
        return f" (no AWS credentials found{_HINT})"
    return ""


def _aws_credentials_configured(location: Location) -> bool:
    """Whether credentials for S3 are given without asking the instance metadata service:
    in the URI (``s3://KEY:SECRET@bucket``), the environment, or the AWS shared files."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(
        env.get(name)
        for name in (
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
    ):
        return True
    files = (
        env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        env.get("AWS_CONFIG_FILE", "~/.aws/config"),
    )
    if any(Path(name).expanduser().is_file() for name in files):
        return True
    # The options an S3 filesystem pickles itself with hold the credentials its URI gave.
    _, (options,) = location.filesystem.__reduce__()
    return bool(options.get("access_key"))
