"""``python -m parity``: see ``parity.cli``."""

from __future__ import annotations

import sys

from parity._openblas import quiet_openblas_workers

if __name__ == "__main__":
    quiet_openblas_workers()
    from parity.cli import main

    sys.exit(main())
