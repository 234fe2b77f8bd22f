"""``python -m ksds.cli``: the ``ksds`` command."""

from . import main

raise SystemExit(main())
