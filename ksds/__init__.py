"""ksds: a VSAM-style key-sequenced data set engine.

Records of a fixed length, each with a fixed-length key at a fixed offset, stored in control intervals (CIs)
grouped into control areas (CAs), found through a persistent B+-tree index, with VSAM's CI and CA splits,
FREESPACE, LISTCAT statistics and VSAM/COBOL error codes. Every CI is checksummed (CRC32C) and every request
is atomic across crashes (a write-ahead log of record operations and CI images).

    import ksds
    ksds.define("cust.ksds", key_length=8, record_length=80)
    with ksds.open("cust.ksds") as ds:
        ds.write(b"00000001" + b"Ada Lovelace".ljust(72))
        ds.read(b"00000001")
        for record in ds.browse(b"0000", generic=True):
            ...
"""

from .browse import Browse
from .dataset import Dataset, build_aix, define, define_aix, delete, delete_aix, open
from .definition import Definition
from .errors import (
    BrowseError,
    CorruptionError,
    DamagedCIError,
    DatasetClosedError,
    DatasetExistsError,
    DatasetInUseError,
    DatasetNotFoundError,
    DeadlockError,
    DefinitionError,
    DuplicateKeyError,
    InvalidRequestError,
    JournalCorruptError,
    KsdsError,
    LatchTimeoutError,
    NoSpaceError,
    NotADatasetError,
    ReadOnlyError,
    RecordLengthError,
    RecordLockedError,
    RecordNotFoundError,
)
from .examine import ExamineReport, Finding, examine
from .pager import Recovery
from .path import Path
from .verify import VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "Path",
    "Browse",
    "BrowseError",
    "CorruptionError",
    "DamagedCIError",
    "Dataset",
    "DatasetClosedError",
    "DatasetExistsError",
    "DatasetInUseError",
    "DatasetNotFoundError",
    "DeadlockError",
    "Definition",
    "DefinitionError",
    "DuplicateKeyError",
    "InvalidRequestError",
    "JournalCorruptError",
    "KsdsError",
    "LatchTimeoutError",
    "NoSpaceError",
    "NotADatasetError",
    "ReadOnlyError",
    "RecordLengthError",
    "RecordLockedError",
    "RecordNotFoundError",
    "ExamineReport",
    "Finding",
    "Recovery",
    "examine",
    "verify",
    "VerifyReport",
    "build_aix",
    "define",
    "define_aix",
    "delete",
    "delete_aix",
    "open",
]
