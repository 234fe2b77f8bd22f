"""The ksds benchmark harness: ksds against sqlite3, LMDB, Berkeley DB and diskcache on the same records.

Run ``python -m benchmarks`` (``--help`` for the options; ``benchmarks/README.md`` for what each row means).
:func:`main` is the command line as a function (``main(["--quick", "--out", DIR])``).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)


__all__ = ["main"]
