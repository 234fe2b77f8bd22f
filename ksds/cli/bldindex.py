"""ksds bldindex: BLDINDEX: build an alternate index again from its base."""

from __future__ import annotations

import argparse

from .. import dataset
from ._common import OK, Progress, Subparsers, add_verb

EXAMPLES = """
  ksds bldindex cust.ksds --name BYCITY      (a NOUPGRADE alternate index, current again)
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "bldindex",
        "build an alternate index again from its base (BLDINDEX)",
        "Empty the alternate index NAME of the data set PATH and build it from the records there now. A NOUPGRADE "
        "alternate index is then current again; an UPGRADE one is always current, so this only reorganises it.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", required=True, metavar="NAME", help="the alternate index's name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Progress(f"ksds bldindex {args.name}") as bar:
        info = dataset.build_aix(args.path, args.name, progress=lambda d, t: bar.update(d, t, "records"))
    print(f"built alternate index {args.name} of {args.path}: {info['records']} records, {info['levels']} index levels")
    return OK
