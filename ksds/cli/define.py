"""ksds define: DEFINE CLUSTER INDEXED."""

from __future__ import annotations

import argparse

from .. import dataset
from ..definition import MAX_CI_SIZE
from ._common import OK, USAGE, CliError, Subparsers, add_freespace_shareoptions, add_verb, whole_number

EXAMPLES = """
  ksds define cust.ksds --keys 8 0 --recordsize 80
  ksds define cust.ksds --keys 8 0 --recordsize 80 --cisize 4096 --freespace 20 10 --shareoptions 2 3
  ksds define zowe.ksds --keys 128 0 --recordsize 4096 --cisize 32768      (the Zowe caching service's layout)
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "define",
        "create an empty data set (DEFINE CLUSTER INDEXED)",
        "Create an empty data set at PATH (it must not exist). Records are fixed-length; each has a key of "
        "LENGTH bytes at OFFSET. The CI size is rounded up the way VSAM does (512..8192 by 512, then by 2048).",
        EXAMPLES,
    )
    prog = p.prog
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--keys",
        nargs=2,
        type=whole_number(prog, "--keys", 0, MAX_CI_SIZE),
        required=True,
        metavar=("LENGTH", "OFFSET"),
        help="KEYS(length offset)",
    )
    p.add_argument(
        "--recordsize",
        nargs="+",
        type=whole_number(prog, "--recordsize", 1, MAX_CI_SIZE),
        required=True,
        metavar="LENGTH",
        help="the record length (RECORDSIZE(avg max) may be given as two equal numbers)",
    )
    p.add_argument(
        "--cisize",
        type=whole_number(prog, "--cisize", 1, MAX_CI_SIZE),
        default=4096,
        metavar="N",
        help="control interval size (default 4096)",
    )
    p.add_argument(
        "--cis-per-ca",
        type=whole_number(prog, "--cis-per-ca", 2, 65535),
        metavar="N",
        help="CIs per control area (default: up to 1 MiB a CA)",
    )
    add_freespace_shareoptions(p, defaults=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sizes: list[int] = args.recordsize
    if len(sizes) > 2:
        raise CliError("--recordsize takes LENGTH, or AVG MAX", USAGE)
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        raise CliError(
            f"records are fixed-length: RECORDSIZE({sizes[0]} {sizes[1]}) must have equal average and maximum", USAGE
        )
    kl, ko = args.keys
    d = dataset.define(
        args.path,
        key_length=kl,
        key_offset=ko,
        record_length=sizes[-1],
        ci_size=args.cisize,
        cis_per_ca=args.cis_per_ca,
        freespace=tuple(args.freespace),
        share_options=tuple(args.shareoptions),
    )
    rounded = f" (rounded up from {args.cisize})" if d.ci_size != args.cisize else ""
    print(
        f"defined {args.path}: KEYS({d.key_length} {d.key_offset}) RECORDSIZE({d.record_length} {d.record_length}) "
        f"CISIZE({d.ci_size}){rounded} CI/CA({d.cis_per_ca}) FREESPACE({d.freespace[0]} {d.freespace[1]}) "
        f"SHAREOPTIONS({d.share_options[0]} {d.share_options[1]}); {d.records_per_ci} records per CI"
    )
    return OK
