"""The exception hierarchy: every error ksds raises is a :class:`KsdsError`.

Each class carries the codes a mainframe developer would look for:

``rpl_code``
    the VSAM RPL feedback (reason) code of a logical error (R15=8), e.g. 8 duplicate key, 16 not found;
``file_status``
    the Enterprise COBOL file status, e.g. ``"22"`` duplicate key, ``"23"`` not found;
``cics``
    the CICS file-control condition, e.g. ``"DUPREC"``, ``"NOTFND"``.

A code is ``None`` where VSAM has no equivalent. Messages name the thing they are about: the data set, the CI
(by number and RBA), the key (in hex), or the parameter.
"""

from __future__ import annotations


def show_key(key: bytes) -> str:
    """A key as every message shows it: ``X'C1C2C3'``, and the text too where all its bytes are printable ASCII:
    ``X'414243' ('ABC')``. O(len(key))."""
    shown = f"X'{key.hex().upper()}'"
    if key and key.isascii():
        text = key.decode("ascii")
        if text.isprintable():
            return f"{shown} ({text!r})"
    return shown


class KsdsError(Exception):
    """Base class of every ksds error."""

    rpl_code: int | None = None
    file_status: str | None = "90"
    cics: str | None = None


# --- definition and open ---------------------------------------------------------------------------------


class DefinitionError(KsdsError, ValueError):
    """A DEFINE parameter is invalid (the message names the parameter)."""

    file_status = "39"
    cics = "INVREQ"


class DatasetExistsError(KsdsError, FileExistsError):
    """``define`` was asked to create a data set at a path that already exists."""

    file_status = "90"


class DatasetNotFoundError(KsdsError, FileNotFoundError):
    """No data set at that path (COBOL 35: file not present)."""

    file_status = "35"
    cics = "FILENOTFOUND"


class NotADatasetError(KsdsError):
    """The file exists but is not a ksds data set, or has a format version this code does not read."""

    file_status = "39"


class DatasetInUseError(KsdsError):
    """The open would break the data set's SHAREOPTIONS (VSAM exclusive control, COBOL 93)."""

    rpl_code = 20
    file_status = "93"
    cics = "SYSIDERR"


# --- requests ---------------------------------------------------------------------------------------------


class InvalidRequestError(KsdsError, ValueError):
    """A request's arguments are wrong: a key of the wrong length or type, a bad option."""

    file_status = "92"
    cics = "INVREQ"


class RecordLengthError(InvalidRequestError):
    """A record is not exactly the data set's record length (CICS LENGERR, COBOL 44)."""

    rpl_code = 108
    file_status = "44"
    cics = "LENGERR"


class DuplicateKeyError(KsdsError, KeyError):
    """WRITE of a key that already exists (RPL 8, COBOL 22, CICS DUPREC)."""

    rpl_code = 8
    file_status = "22"
    cics = "DUPREC"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RecordNotFoundError(KsdsError, KeyError):
    """No record with that key (RPL 16, COBOL 23, CICS NOTFND)."""

    rpl_code = 16
    file_status = "23"
    cics = "NOTFND"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoSpaceError(KsdsError):
    """The data set cannot be extended (RPL 28, COBOL 24, CICS NOSPACE)."""

    rpl_code = 28
    file_status = "24"
    cics = "NOSPACE"


class DatasetClosedError(KsdsError):
    """A request on a data set that is closed (COBOL 42: file not open)."""

    file_status = "42"
    cics = "NOTOPEN"


class ReadOnlyError(KsdsError):
    """WRITE, REWRITE or ERASE on a data set opened with mode "r" (COBOL 49)."""

    file_status = "49"
    cics = "INVREQ"


class BrowseError(KsdsError):
    """A browse request that has no valid position (COBOL 46)."""

    file_status = "46"
    cics = "INVREQ"


# --- damage -----------------------------------------------------------------------------------------------


class CorruptionError(KsdsError):
    """Damage found on disk: a CI whose checksum fails, a truncated file, a broken index (COBOL 30)."""

    file_status = "30"
    cics = "IOERR"


class DamagedCIError(CorruptionError):
    """One CI failed its check when read; the message names the CI by number and RBA."""

    def __init__(self, message: str, ci: int) -> None:
        super().__init__(message)
        self.ci = ci


class JournalCorruptError(CorruptionError):
    """The write-ahead log is damaged in a way recovery cannot repair without losing committed requests."""


# --- sharing (used by the sharing layer) ------------------------------------------------------------------


class RecordLockedError(KsdsError):
    """A record lock could not be had within the lock timeout (RLS, RPL 22)."""

    rpl_code = 22
    file_status = "9D"
    cics = "LOCKED"


class DeadlockError(KsdsError):
    """This request was chosen to break a deadlock between lock holders (RLS, RPL 21)."""

    rpl_code = 21
    file_status = "9D"
    cics = "AFCW"


class LatchTimeoutError(KsdsError):
    """A request (or an open) waited ``lock_timeout`` seconds for the physical-update latch and gave up.

    The latch is ksds's CI-level exclusive control across opens: VSAM reports a request that finds the control
    interval it needs held by another user under exclusive control with RPL feedback code 20 (X'14', exclusive
    control conflict), which COBOL sees as file status "93" (resource not available: another user holds it).
    It is not 9D: that status is for RLS record locks (:class:`RecordLockedError`), and the latch is no record's.
    CICS has no condition for a CI wait (it just waits); SYSBUSY ("the request cannot be serviced now, try
    again") is the nearest. The usual cause is a ``batch()`` held open for a long time by another open (it holds
    the exclusive latch from start to end); the message names the process that holds the latch.
    """

    rpl_code = 20
    file_status = "93"
    cics = "SYSBUSY"
