"""ksds delete-aix: DELETE ALTERNATEINDEX: remove an alternate index (its space goes back to the data set)."""

from __future__ import annotations

import argparse

from .. import dataset
from ._common import OK, Subparsers, add_verb

EXAMPLES = """
  ksds delete-aix cust.ksds --name BYCITY
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "delete-aix",
        "remove an alternate index (DELETE ALTERNATEINDEX)",
        "Remove the alternate index NAME of the data set PATH in one transaction: its CAs and index CIs go back to "
        "the data set's free lists (later splits of the base or of another alternate index reuse them).",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", required=True, metavar="NAME", help="the alternate index's name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset.delete_aix(args.path, args.name)
    print(f"deleted alternate index {args.name} of {args.path}")
    return OK
