"""The one atomic writer: readers see no file or a whole file, never a partial one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> Path:
    """`write(binary file)` into a hidden `.part` file beside `path`, fsync, rename over `path`.

    Many jobs may write into the same folder; the rename is made durable where the file system
    allows. A link standing at `path` is replaced, never written through.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=f"{path.suffix}.part")
    try:
        # mkstemp makes the file 0600; a results folder shared by a team needs the mode any
        # other new file of this user gets (0666 less the umask).
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            except Exception as err:
                # A writer that turns the OSError into its own error (torch.save reports a full
                # disk as "unexpected pos ..."): the file system's own error, naming the file.
                if f.error is not None and err is not f.error:
                    raise OSError(f.error.errno, f.error.strerror, str(path)) from err
                if isinstance(err, OSError) and err.filename is None:
                    raise OSError(err.errno, err.strerror, str(path)) from err
                raise
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


class _Recording:
    """A binary file that remembers the first OSError its writes met."""

    def __init__(self, raw):
        self._raw, self.error = raw, None

    def write(self, data):
        try:
            return self._raw.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self):
        try:
            return self._raw.flush()
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):  # fileno, tell, seek, ... as the file has them
        return getattr(self._raw, name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _umask() -> int:
    # Read without changing it where Linux says it (os.umask can only be read by setting it,
    # which races with other threads creating files).
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
