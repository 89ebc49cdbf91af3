"""The one way FastGPU replaces a file: write beside it, then rename over it."""

import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Union


def atomic_write(path: Path, content: Union[str, bytes, Callable[[Path], None]], keep_as: Optional[Path] = None):
    """Write `content` (text, bytes, or a function that writes a given path) to `path` through `path.tmp`.

    A kill mid-write never leaves a broken file, and a failed write (disk full, read-only) leaves no temporary
    file. `keep_as`: where the file it replaces is kept, if anywhere (a checkpoint keeps the previous state)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        if keep_as is not None and path.exists():
            os.replace(path, keep_as)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def disk_of(path) -> tuple:
    """(the mount point holding `path`, its free bytes): for messages about a full disk."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    mount = path
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return mount, shutil.disk_usage(path).free


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"
