"""ksds alter: ALTER FREESPACE / SHAREOPTIONS."""

from __future__ import annotations

import argparse

from .. import dataset
from ._common import OK, USAGE, CliError, Subparsers, add_freespace_shareoptions, add_verb

EXAMPLES = """
  ksds alter cust.ksds --freespace 20 10
  ksds alter cust.ksds --shareoptions 2 3
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "alter",
        "change FREESPACE or SHAREOPTIONS (ALTER)",
        "Change the attributes that can change after DEFINE: FREESPACE (used by later loads and CI/CA splits) and "
        "SHAREOPTIONS. KEYS, RECORDSIZE and CISIZE cannot change: define a new data set and REPRO into it.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    add_freespace_shareoptions(p, defaults=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.freespace is None and args.shareoptions is None:
        raise CliError("nothing to alter: give --freespace CI CA and/or --shareoptions R S", USAGE)
    fs = (args.freespace[0], args.freespace[1]) if args.freespace is not None else None
    so = (args.shareoptions[0], args.shareoptions[1]) if args.shareoptions is not None else None
    with dataset.open(args.path, "rw") as ds:
        ds.alter(freespace=fs, share_options=so)
        d = ds.definition
    print(
        f"altered {args.path}: FREESPACE({d.freespace[0]} {d.freespace[1]}) "
        f"SHAREOPTIONS({d.share_options[0]} {d.share_options[1]})"
    )
    return OK
