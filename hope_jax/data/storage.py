"""Local directories and remote locations (gs://…) behind one small set of helpers.

A path with a scheme (`gs://bucket/run`, anything with "://") is remote and goes through
`etils.epath` (gcsfs for gs://); every other path is a local one, with `~` expanded and made
absolute. Arrays never pass through here: orbax and tensorstore open remote locations
themselves. Object stores cannot append to or rename a file in place, so whatever is written a
line at a time (metrics, TensorBoard events) is kept locally and copied up whole (`upload`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` names a remote location (it has a scheme such as gs://)."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> str:
    """A remote location as given (no trailing "/"); a local path expanded and absolute."""
    path = os.fspath(path)
    if is_remote(path):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *names: str) -> str:
    """`base`/`names` for either kind of location ("/"-joined, which is what both accept)."""
    return os.path.join(base, *names)


def _epath(path: str):
    from etils import epath
    return epath.Path(path)


def _fresh(path: str):
    """epath.Path of a remote `path`, with fsspec's listing cache dropped first: another process
    (a training run, another host) may have written there since this one last looked."""
    try:
        import fsspec
        fsspec.filesystem(path.split("://", 1)[0]).invalidate_cache()
    except (ImportError, ValueError):
        pass
    return _epath(path)


def exists(path: str) -> bool:
    return _fresh(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _fresh(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names in the directory `path` ([] when it does not exist)."""
    if is_remote(path):
        p = _fresh(path)
        return [c.name for c in p.iterdir()] if p.exists() else []
    return os.listdir(path) if os.path.isdir(path) else []


def makedirs(path: str) -> None:
    """Creates `path` and its parents (on an object store: a no-op where prefixes suffice)."""
    if is_remote(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def write_text(path: str, text: str) -> None:
    """Writes a whole file atomically: locally beside it and renamed into place; remotely one
    object upload (an object store shows the old object or the new one, never a part)."""
    if is_remote(path):
        makedirs(os.path.dirname(path))
        _epath(path).write_text(text)
        return

    def write(local: str) -> None:
        with open(local, "w") as f:
            f.write(text)
    write_with(path, write)


def write_with(path: str, write: Callable[[str], None]) -> None:
    """`write(local_path)` (a plotting library's savefig, say) for a file that lands at `path`:
    locally its directory is created first and the file renamed into place; remotely it is
    written to a temporary directory and uploaded."""
    if is_remote(path):
        with tempfile.TemporaryDirectory() as d:
            local = os.path.join(d, os.path.basename(path))
            write(local)
            upload(local, path)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"  # savefig picks the format from the extension
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # the writer failed: leave nothing half-written behind
            os.remove(tmp)


def read_text(path: str) -> str:
    if is_remote(path):
        return _epath(path).read_text()
    with open(path) as f:
        return f.read()


def upload(local_file: str, remote_file: str) -> None:
    """Copies one local file to a remote location whole (replacing what is there)."""
    _epath(local_file).copy(_epath(remote_file), overwrite=True)


def download(remote_file: str, local_file: str) -> None:
    os.makedirs(os.path.dirname(local_file) or ".", exist_ok=True)
    _epath(remote_file).copy(_epath(local_file), overwrite=True)


def rename(src: str, dst: str) -> None:
    """Renames a file or directory (remote: copy then delete, so not atomic there)."""
    if is_remote(src):
        _epath(src).rename(_epath(dst))
    else:
        os.rename(src, dst)


def upload_tree(local_dir: str, remote_dir: str, last: str | None = None) -> None:
    """Copies every file of `local_dir` (recursively) under `remote_dir`; `last` (a file name at
    the top) is copied after all the others, so a reader that waits for it sees every file."""
    files = []
    for root, _, names in os.walk(local_dir):
        for n in names:
            files.append(os.path.relpath(os.path.join(root, n), local_dir))
    for rel in sorted(files, key=lambda r: r == last):
        dst = join(remote_dir, rel)
        makedirs(os.path.dirname(dst))
        upload(os.path.join(local_dir, rel), dst)


def download_tree(remote_dir: str) -> str:
    """A fresh local temporary copy of the files directly under `remote_dir`; its path."""
    local = tempfile.mkdtemp(prefix="hope_jax_")
    for name in listdir(remote_dir):
        src = join(remote_dir, name)
        if not isdir(src):
            download(src, os.path.join(local, name))
    return local


def local_mirror(remote: str) -> str:
    """A fresh local directory that stands in for the remote `remote` for the files written a
    line at a time; the caller downloads what it continues and uploads what it writes."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in remote)[-60:]
    return tempfile.mkdtemp(prefix=f"hope_jax_{safe}_")


__all__ = ["download", "download_tree", "exists", "is_remote", "isdir", "join", "listdir",
           "local_mirror", "makedirs", "read_text", "rename", "resolve", "upload", "upload_tree",
           "write_text", "write_with"]
