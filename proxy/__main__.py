"""``python -m proxy`` and the ``llm-cache-proxy`` script: the one module that reads the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from proxy.cli.main import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m proxy``."""
    return cli_main(list(sys.argv[1:] if argv is None else argv), os.environ)


if __name__ == "__main__":
    sys.exit(main())
