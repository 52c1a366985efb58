"""File safety: every path a command touches is checked up front, and every write is atomic.

Two jobs, both here so no command can skip them:

1. :class:`PathPlan`: a command declares the paths it reads and the paths it
   writes, each with a short label for the error line, and :meth:`PathPlan.check`
   refuses any problem before work starts: a write that is one of the reads
   (also through symlinks, ``..``, hard links or another case of the same
   file), two writes to one file, a write inside a folder that is read, a
   destination that is a folder or not writable, a read that does not exist, a
   destination in a folder that does not exist (unless the plan may make folders:
   ``--mkdir``; a typo in a folder name must not silently create a tree).

   Adding a path to a command is one line in its ``paths`` function in
   ``cli.py`` (the lines below are examples)::

       plan.read("--calib", args.calib, folder=None)   # a file or a folder (True: a folder)
       plan.write("--plot", args.plot)                 # a PNG the command writes

   The model's external-data files are reads too: ``cli`` adds them once the
   model header is parsed (``onnx_in.open_model``), before they are loaded.

2. :class:`Outputs` (``with atomic_outputs() as out: out.stage(dest, writer)``):
   each file is written into a fresh staging folder next to its destination
   (created inside the cleanup scope, so an interrupt at any point leaves
   nothing behind), and only when every output is staged are they renamed into
   place together, with SIGINT/SIGTERM held off during the renames. A failure
   or an interrupt before that removes every staging folder (and any folder
   created for it): a run writes all of its outputs or none of them.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError

# Read only by tests: "POINT:MARKER" makes a write touch MARKER and pause at POINT
# ("staging": staging folder made, nothing in it; "commit": every output staged, none renamed).
TEST_PAUSE_ENV = "ONNXPRUNE_TEST_PAUSE"


class Access(str, Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class PathUse:
    """One path a command uses; ``label`` names it in error lines ("output", "--report", "input")."""

    label: str
    spelling: str  # as the user wrote it, for error lines
    access: Access
    folder: bool | None = False  # True: a folder read as a whole (nothing may be written inside); None: either

    @property
    def path(self) -> Path:
        return Path(self.spelling)

    def __str__(self) -> str:
        return f"{self.label} {self.spelling}"


class PathPlan:
    """The paths one command reads and writes; :meth:`check` before any work."""

    def __init__(self, make_folders: bool = False) -> None:
        self.uses: list[PathUse] = []
        self.make_folders = make_folders  # destinations' missing folders are created (--mkdir) or refused

    def read(self, label: str, path: str | os.PathLike | None, folder: bool | None = False) -> "PathPlan":
        if path is not None and str(path) != "":
            self.uses.append(PathUse(label, os.fspath(path), Access.READ, folder))
        return self

    def write(self, label: str, path: str | os.PathLike | None) -> "PathPlan":
        if path is not None and str(path) != "":
            self.uses.append(PathUse(label, os.fspath(path), Access.WRITE))
        return self

    @property
    def reads(self) -> list[PathUse]:
        return [u for u in self.uses if u.access == Access.READ]

    @property
    def writes(self) -> list[PathUse]:
        return [u for u in self.uses if u.access == Access.WRITE]

    def check(self, reads_exist: bool = True) -> "PathPlan":
        """Raise InputError for the first problem; ``reads_exist=False`` leaves existence to the readers."""
        if reads_exist:
            for use in self.reads:
                _check_readable(use)
        for k, write in enumerate(self.writes):
            _check_writable(write)
            for other in self.reads + self.writes[:k]:
                _check_distinct(write, other)
        for write in self.writes if not self.make_folders else ():  # after the clashes, which say more
            if not write.path.absolute().parent.exists():
                raise InputError(f"{write}: the folder {write.path.parent} does not exist (--mkdir creates it)")
        return self


def _check_readable(use: PathUse) -> None:
    if not use.path.exists():
        what = {True: "folder", False: "file", None: "file or folder"}[use.folder]
        raise InputError(f"{use}: no such {what}")
    if use.folder is True and not use.path.is_dir():
        raise InputError(f"{use}: not a folder")
    if use.folder is False and not use.path.is_file():
        raise InputError(f"{use}: not a file")


def _check_writable(use: PathUse) -> None:
    if use.path.is_dir():
        raise InputError(f"{use} is a directory; give a file name")
    folder = next(p for p in use.path.absolute().parents if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"{use}: {folder} is not a writable folder")


def _check_distinct(write: PathUse, other: PathUse) -> None:
    again = "also " if other.access == Access.WRITE else ""
    if same_file(write.path, other.path):
        raise InputError(f"{write} is {again}the {other.label} file; choose another path")
    if other.folder is not False and other.path.is_dir() and _inside(write.path, other.path):
        raise InputError(f"{write} is inside the {other.label} folder {other.spelling}; choose another path")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """One file under two spellings: symlinks, ``..``, hard links, case on case-insensitive disks."""
    a, b = Path(a), Path(b)
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def resolve_inside(folder: str | os.PathLike, location: str, what: str) -> Path:
    """``location`` relative to ``folder``; absolute paths and paths leaving ``folder`` are refused.

    Symlinks are followed before the check, so a link inside the folder that
    points outside it is refused too.
    """
    if not location:
        raise InputError(f"{what}: empty location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or os.path.splitdrive(location)[0]:
        raise InputError(f"{what}: absolute location '{location}' refused (it must be relative to the model)")
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(root / location))
    try:
        target.relative_to(root)
    except ValueError:
        raise InputError(f"{what}: location '{location}' leaves the model's folder; refused") from None
    return target


# ------------------------------------------------------------------ atomic, signal-safe writes
_commits = 0  # transactions committed in this process (the CLI's interrupt line says whether outputs landed)


def commits() -> int:
    return _commits


class Outputs:
    """Outputs staged next to their destinations; see :func:`atomic_outputs`."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (staging folder, destination)
        self._made_folders: list[Path] = []  # destination folders this run created
        self.committed = False

    def stage(self, dest: str | os.PathLike, write: Callable[[Path], None]) -> None:
        """Call ``write(path)``; ``path`` has ``dest``'s name in a staging folder.

        ``write`` may put sibling files there too (a model's external data);
        they are renamed next to ``dest`` with it.
        """
        dest = Path(dest)
        missing = [p for p in reversed(dest.absolute().parents) if not p.exists()]
        self._made_folders.extend(missing)  # registered first: an interrupt in mkdir still cleans up
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
        self._staged.append((staging, dest))
        staging.mkdir()
        _pause_for_tests("staging")
        write(staging / dest.name)

    def commit(self) -> None:
        global _commits
        _pause_for_tests("commit")
        with signals_held():
            for staging, dest in self._staged:
                for item in sorted(staging.iterdir()):
                    os.replace(item, dest.parent / item.name)
            self.committed = True
            _commits += 1

    def discard(self) -> None:
        for staging, _ in self._staged:
            shutil.rmtree(staging, ignore_errors=True)
        if not self.committed:
            for folder in reversed(self._made_folders):
                try:
                    folder.rmdir()
                except OSError:
                    pass


@contextmanager
def atomic_outputs() -> Iterator[Outputs]:
    """``with atomic_outputs() as out: out.stage(dest, writer)``: all outputs land together, or none."""
    outputs = Outputs()
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.discard()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_outputs() as out:
        out.stage(path, lambda staged: staged.write_text(text))


@contextmanager
def signals_held():
    """Hold SIGINT/SIGTERM off (they are delivered on exit) so a rename sequence is never cut in half."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pause_for_tests(point: str) -> None:
    spec = os.environ.get(TEST_PAUSE_ENV, "")
    where, _, marker = spec.partition(":")
    if where == point and marker:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)


__all__ = ["Access", "PathUse", "PathPlan", "same_file", "resolve_inside", "Outputs", "atomic_outputs",
           "write_text", "signals_held"]
