"""ksds define-aix: DEFINE ALTERNATEINDEX RELATE(base) + BLDINDEX: an alternate index over a data set."""

from __future__ import annotations

import argparse

from .. import dataset
from ..definition import MAX_CI_SIZE
from ._common import OK, Progress, Subparsers, add_verb, whole_number

EXAMPLES = """
  ksds define-aix cust.ksds --name BYNAME --keys 20 8              (non-unique, kept in step: UPGRADE)
  ksds define-aix cust.ksds --name BYMAIL --keys 40 28 --unique    (a second record with one e-mail is refused)
  ksds define-aix cust.ksds --name BYCITY --keys 12 68 --noupgrade (rebuilt by 'ksds bldindex' when wanted)
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "define-aix",
        "define and build an alternate index (DEFINE ALTERNATEINDEX + BLDINDEX)",
        "Define an alternate index NAME over the data set PATH, keyed by the field of LENGTH bytes at OFFSET of "
        "each record (it may overlap the prime key), and build it from the records there now. The alternate "
        "index lives in the data set's file: every later WRITE, REWRITE and ERASE keeps it in step in the same "
        "transaction (UPGRADE), unless --noupgrade. --unique refuses a record whose alternate key another record "
        "has (and refuses to define it over records that already share one).",
        EXAMPLES,
    )
    prog = p.prog
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", required=True, metavar="NAME", help="the alternate index's name (1-31 characters)")
    p.add_argument(
        "--keys", nargs=2, type=whole_number(prog, "--keys", 0, MAX_CI_SIZE), required=True,
        metavar=("LENGTH", "OFFSET"), help="KEYS(length offset) of the alternate key in the base's records",
    )
    p.add_argument("--unique", action="store_true", help="UNIQUEKEY (default NONUNIQUEKEY)")
    p.add_argument("--noupgrade", action="store_true", help="NOUPGRADE: not kept in step (default UPGRADE)")
    p.add_argument(
        "--freespace", nargs=2, type=whole_number(prog, "--freespace", 0, 100), default=[0, 0],
        metavar=("CI%", "CA%"), help="FREESPACE of the alternate index (default 0 0)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kl, ko = args.keys
    with Progress(f"ksds define-aix {args.name}") as bar:
        info = dataset.define_aix(
            args.path, args.name, key_length=kl, key_offset=ko, unique=args.unique, upgrade=not args.noupgrade,
            freespace=(args.freespace[0], args.freespace[1]), progress=lambda d, t: bar.update(d, t, "records"),
        )
    print(
        f"defined alternate index {args.name} over {args.path}: KEYS({kl} {ko}) "
        f"{'UNIQUEKEY' if args.unique else 'NONUNIQUEKEY'} {'NOUPGRADE' if args.noupgrade else 'UPGRADE'}; "
        f"built: {info['records']} records, {info['levels']} index levels"
    )
    return OK
