"""Typed errors for ctsam.

Every error names what failed, for which case or file, what was expected and what was found,
and how to fix it. Only :mod:`ctsam.cli` maps them to exit codes:

* 2 -- bad input data or configuration (:class:`CtsamError` and most subclasses),
* 3 -- an external tool failed (:class:`ExternalToolError`),
* 4 -- the machine refused a file operation: disk full, read-only file system, permission
  denied, missing folder (:class:`EnvironmentFault`; also any such ``OSError`` escaping a command),
* 1 -- anything unexpected (not a :class:`CtsamError`).
"""

from __future__ import annotations

import errno
import os
from os import PathLike


class CtsamError(Exception):
    """Base class of every error ctsam raises on purpose.

    Args:
        what: one sentence saying what failed.
        case: pseudonymous case id, when known.
        path: the file or folder concerned, when known.
        expected: what ctsam expected to find.
        found: what it found instead.
        fix: how the user can fix it.
    """

    exit_code = 2

    def __init__(
        self,
        what: str,
        *,
        case: str | None = None,
        path: str | PathLike[str] | None = None,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.case = case
        self.path = None if path is None else str(path)
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        head = self.what
        where = []
        if self.case:
            where.append(f"case {self.case}")
        if self.path:
            where.append(self.path)
        if where:
            head = f"{head} [{'; '.join(where)}]"
        lines = [head]
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.found is not None:
            lines.append(f"  found:    {self.found}")
        if self.fix is not None:
            lines.append(f"  fix:      {self.fix}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The error as a single line (for cohort failure tables)."""
        return " | ".join(line.strip() for line in str(self).splitlines())


class ConfigError(CtsamError):
    """The configuration file or a command-line option is invalid."""


class InputDataError(CtsamError):
    """An input file (image, label map, prompts, table) is missing, unreadable or inconsistent."""


class DicomSeriesError(InputDataError):
    """A DICOM study holds no usable CT series, or the chosen series has broken geometry."""


class SpaceMismatchError(InputDataError):
    """Two volumes that must share a voxel grid do not."""


class CheckpointError(CtsamError):
    """A model checkpoint is missing, truncated, unsafe, or does not fit the architecture."""


class ExternalToolError(CtsamError):
    """An external program (TotalSegmentator, dcm2niix, SLURM ...) failed."""

    exit_code = 3


class ResourceError(CtsamError):
    """Not enough memory, disk, or a requested device (e.g. CUDA) is not available."""


class EnvironmentFault(CtsamError):
    """The machine refused a file operation (disk full, read-only file system, permission denied,
    missing folder): nothing is wrong with the input; fix the storage and re-run the case."""

    exit_code = 4


#: OS error numbers that mean "the machine refused" rather than "the input is bad" (exit code 4)
ENVIRONMENT_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free space on that file system (or point the results folder elsewhere), then re-run",
    errno.EDQUOT: "free space within your disk quota (or point the results folder elsewhere), then re-run",
    errno.EROFS: "the file system is mounted read-only: remount it read-write or choose a writable results folder",
    errno.EACCES: "give this user write/read permission on that folder (or choose another results folder)",
    errno.EPERM: "give this user permission on that folder (or choose another results folder)",
    errno.ENOENT: "create the missing folder (or fix the path), then re-run",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EIO: "the storage reported an I/O error: check the disk or network file system, then re-run",
}


def is_environment_error(err: BaseException) -> bool:
    """True for an ``OSError`` whose errno is one of :data:`ENVIRONMENT_ERRNOS`."""
    return isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS


def environment_fault(
    err: OSError, path: str | PathLike[str] | None = None, *, case: str | None = None, action: str = "write"
) -> EnvironmentFault:
    """An :class:`EnvironmentFault` for ``err``, naming ``path`` (the user's output, not a temp file)
    and the OS reason (e.g. ``ENOSPC: No space left on device``)."""
    target = path if path is not None else err.filename
    code = errno.errorcode.get(err.errno or -1, str(err.errno))
    reason = err.strerror or os.strerror(err.errno or 0)
    return EnvironmentFault(
        f"cannot {action} {target}: {reason}" if target is not None else f"cannot {action}: {reason}",
        case=case,
        expected=f"a file system that lets ctsam {action} this path",
        found=f"{code}: {reason}",
        fix=ENVIRONMENT_ERRNOS.get(err.errno or -1, "check the storage, then re-run"),
    )
