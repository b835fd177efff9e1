"""Artefact folders written all-or-nothing: build beside the target, then swap it in.

A crash mid-write leaves the previous folder intact (or none), never a half-written one. What a killed
writer leaves beside the target (its temp folder, or the previous folder it had just moved aside) is
cleaned up by the next writer: temp folders of dead writers are removed, and a previous folder whose swap
was cut short is put back when the target is missing. The writer's pid and host are in those names so a
live writer's folders are never touched (a pid is only checked on its own host).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def _tag() -> str:
    return f"{os.getpid()}@{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's writer: cannot tell, leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(folder: str | Path) -> None:
    """Clean up after writers of `folder` that were killed mid-swap (see the module docstring)."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    pat = re.compile(rf"^\.{re.escape(folder.name)}\.(tmp|old)-(?:(\d+)@(.+)-)?[0-9a-f]{{8}}$")
    stale: dict[str, list[Path]] = {"tmp": [], "old": []}
    for p in folder.parent.iterdir():
        m = pat.match(p.name)
        if m and not (m.group(2) and _alive(int(m.group(2)), m.group(3))):
            stale[m.group(1)].append(p)
    olds = sorted(stale["old"], key=lambda p: p.stat().st_mtime)
    if olds and not folder.exists():  # killed between moving the old folder aside and moving the new one in
        log.warning("%s: restoring the previous version left by an interrupted write", folder)
        os.replace(olds.pop(), folder)
    for p in stale["tmp"] + olds:
        log.warning("removing %s, left by an interrupted write", p.name)
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def folder_swap(folder: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `folder`; on success it replaces `folder`, on error it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{_tag()}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{_tag()}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
