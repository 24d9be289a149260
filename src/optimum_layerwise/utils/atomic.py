"""Atomic folder writes: stage everything in a sibling folder, fsync it, then swap it into place.

At every instant the target folder holds either its complete previous content or the complete new one: a crash,
a full disk, Ctrl-C or SIGKILL during the write leaves the previous content untouched. On Linux the swap is one
`renameat2(RENAME_EXCHANGE)` call; elsewhere two renames (the target is missing for the instant between them, never
half-written). Staging folders left behind by a killed process are removed by the next write to the same target.

This module imports neither torch nor transformers.

```python
from optimum_layerwise.atomic import atomic_folder

with atomic_folder("my-model") as staging:   # an empty sibling folder, `.my-model.layerwise-staging-<pid>-<random>`
    (staging / "config.json").write_text("{}")
# now "my-model" holds config.json; files of the previous "my-model" that were not rewritten are kept
```
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .units import format_bytes


STAGING_MARK = ".layerwise-staging-"
# staging folders of this process's open `atomic_folder` blocks: a write into one of them is already atomic
_OPEN_STAGING: set[Path] = set()
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of `target` left by processes that no longer run (e.g. killed during a save), and
    the staging folders of those (`..target.layerwise-staging-A.layerwise-staging-B`, which saves nested in a staging
    folder wrote before nested writes went straight into the outer staging folder).

    Returns:
        `list[Path]`: the folders removed.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    prefix = f".{target.name}{STAGING_MARK}"
    for entry in target.parent.iterdir():
        name = entry.name.removeprefix(".") if entry.name.startswith(f".{prefix}") else entry.name  # a nested one
        if not name.startswith(prefix) or not entry.is_dir():
            continue
        pid_text = name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _normalize_permissions(folder: Path) -> None:
    """Give what was staged the permissions a plain write would have (temporary files are created 0600/0700)."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links
        shutil.copy2(source, destination)


def _carry_over(previous: Path, staging: Path, discard: Sequence[str]) -> None:
    """Bring into `staging` the entries of `previous` that were not rewritten and do not match `discard` (hard links:
    no data is copied, and the previous folder is not modified)."""
    for entry in previous.iterdir():
        destination = staging / entry.name
        if destination.exists() or destination.is_symlink():
            continue
        if any(fnmatch.fnmatch(entry.name, pattern) for pattern in discard):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), destination)
        elif entry.is_dir():
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(destination))


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _fsync_path(path)
        _fsync_path(root, directory=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`); `False` when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot exchange
        return False
    raise OSError(error, os.strerror(error), str(second))


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous content
    else:
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}{os.getpid()}-old-", dir=target.parent))
        os.rmdir(retired)
        os.rename(target, retired)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(retired, target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    _fsync_path(str(target.parent), directory=True)


def check_target_folder(target: str | os.PathLike, parameter: str = "save_directory") -> Path:
    """The absolute path of a folder to write atomically; refuses a file and the current folder or its parents.

    Raises:
        `ValueError`: naming `parameter`.
    """
    path = Path(os.path.realpath(os.path.expanduser(os.fspath(target))))
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{parameter}`={os.fspath(target)!r} is a file, not a folder.")
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise ValueError(
            f"`{parameter}`={os.fspath(target)!r} is the current folder or one of its parents: writing a checkpoint "
            "there would replace it. Choose a new folder."
        )
    return path


def free_bytes(target: str | os.PathLike) -> int:
    """Bytes free on the disk that holds `target` (or would hold it: its nearest existing parent is asked)."""
    existing = Path(os.path.abspath(target))
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_free_space(target: str | os.PathLike, needed_bytes: int) -> None:
    """Refuse, before anything is written, a write of about `needed_bytes` that the disk of `target` cannot hold.

    Raises:
        `OSError` (`ENOSPC`): naming the folder, the bytes needed and the bytes free.
    """
    free = free_bytes(target)
    if needed_bytes > free:
        raise OSError(
            errno.ENOSPC,
            f"Not enough disk space to write {os.fspath(target)}: it needs about {format_bytes(needed_bytes)}, its "
            f"disk has {format_bytes(free)} free.",
        )


def _is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk filled up (an `OSError`, or a writer's own error such as safetensors')."""
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike, *, keep_other_files: bool = True, discard: Sequence[str] = (), needed_bytes: int = 0
) -> Iterator[Path]:
    """Write a folder atomically: yields an empty staging folder next to `target`; on a normal exit its content is
    fsynced and swapped into place, on any exception (Ctrl-C included) it is removed and `target` is untouched.

    Args:
        target (`str` or `os.PathLike`):
            The folder to (re)write. Must not be a file, the current folder or one of its parents.
        keep_other_files (`bool`, *optional*, defaults to `True`):
            Keep the entries of the previous `target` that the new content does not rewrite (as
            `save_pretrained` does when writing into an existing folder); `False` replaces the folder wholesale.
        discard (`Sequence[str]`, *optional*):
            Glob patterns of previous entries never kept (e.g. stale weight shards).
        needed_bytes (`int`, *optional*):
            About how much the new content takes: refused before anything is written when the disk has less free
            (see [`check_free_space`]).

    A `target` that is the staging folder of an open `atomic_folder` block of this process (e.g. `save_pretrained`
    called inside one) is yielded as it is: the outer block makes the write atomic.
    """
    target = check_target_folder(target)
    if target in _OPEN_STAGING:
        yield target
        return
    check_free_space(target, needed_bytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}{os.getpid()}-", dir=target.parent))
    _OPEN_STAGING.add(staging)
    try:
        yield staging
        _normalize_permissions(staging)
        if keep_other_files and target.is_dir():
            _carry_over(target, staging, discard)
        _fsync_tree(staging)
        _swap_into_place(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if _is_disk_full(error):
            raise OSError(
                errno.ENOSPC,
                f"The disk filled up while writing {target} ({format_bytes(free_bytes(target))} free after removing "
                "the partial write); the folder was left as it was.",
            ) from error
        raise
    finally:
        _OPEN_STAGING.discard(staging)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Write one file atomically: yields a temporary path next to `target` (same suffix, so writers that pick the
    format from it work); on a normal exit it is fsynced and renamed over `target`, on an exception removed."""
    target = Path(target)
    if target.is_dir():
        raise ValueError(f"{os.fspath(target)!r} is a folder, not a file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(descriptor)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(0o666 & ~_umask())
        _fsync_path(name)
        os.replace(staging, target)
        _fsync_path(str(target.parent), directory=True)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically (see [`atomic_file`])."""
    with atomic_file(target) as staging:
        staging.write_text(text, encoding="utf-8")
