"""``python -m ksds``: the ``ksds`` command (see ``ksds --help``)."""

from .cli import main

raise SystemExit(main())
