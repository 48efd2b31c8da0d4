"""Writing safely: inside the folder the user named, never through a link, a refused write
said in one line (`StorageError`: the file, the cause and what to do)."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


class StorageError(ValueError):
    """The file system refused a write (read-only, permission, disk full, file-size limit) or
    a write would leave the folder the user named; the message names the file, the cause and
    what to do. A ValueError, so the command line prints it as one line (exit 2)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 errno_: int | None = None):
        super().__init__(message)
        self.path, self.errno = (str(path) if path is not None else None), errno_


_ADVICE = {
    errno.EACCES: ("permission denied", "write somewhere you may write, or fix the folder's "
                                        "permissions"),
    errno.EPERM: ("operation not permitted", "write somewhere you may write"),
    errno.EROFS: ("the file system is read-only", "write to a writable folder"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some of your quota or write elsewhere"),
    errno.EFBIG: ("the file grew past the file-size limit (`ulimit -f`, or the file system's "
                  "largest file)", "raise the limit (`ulimit -f unlimited`) or write a smaller "
                  "store (fewer records) or to another file system"),
    errno.EISDIR: ("it is a folder", "name a file"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.ENOENT: ("the folder does not exist", "create it or check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.ELOOP: ("too many levels of links", "check the links on the path"),
    errno.EIO: ("an input/output error of the device", "check the disk, then retry"),
}


def storage_error(exc: OSError, path, doing: str = "write") -> StorageError:
    """One clear line for an OSError met while writing `path`."""
    what, todo = _ADVICE.get(exc.errno, (exc.strerror or str(exc), "check the path and retry"))
    return StorageError(f"cannot {doing} {path}: {what}; {todo}", path, exc.errno)


@contextlib.contextmanager
def writing(path, doing: str = "write"):
    """Turn an OSError of the block into a StorageError naming `path` (StorageError passes)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, path, doing) from None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def folder_in(root: str | os.PathLike, name: str) -> Path:
    """`root/name`, created where missing, after checking that writing there stays inside
    `root`: a `name` that is a link to a folder outside `root` (or a link that leads nowhere)
    is refused. `root` itself is the user's choice, links included."""
    root = Path(root)
    folder = root / name
    with writing(root, "create the results folder"):
        root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    if folder.is_symlink():
        target = folder.resolve()
        if not _inside(target, real_root) or not target.is_dir():
            raise StorageError(f"refusing to write into {folder}: it is a link to {target}, "
                               f"{'outside the results folder ' + str(root) if not _inside(target, real_root) else 'which is no folder'}; "
                               f"remove the link (or make it a real folder) and retry", folder)
    with writing(folder, "create the folder"):
        folder.mkdir(exist_ok=True)
    if not _inside(folder.resolve(), real_root):  # a link higher up, made meanwhile
        raise StorageError(f"refusing to write into {folder}: it leads outside the results "
                           f"folder {root}", folder)
    return folder

