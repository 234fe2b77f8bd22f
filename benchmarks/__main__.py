"""``python -m benchmarks``: run the benchmark suite (see ``benchmarks/README.md``)."""

from .cli import main

raise SystemExit(main())
