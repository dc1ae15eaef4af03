"""The ``w2sjax`` command (placeholder until the experiment runner lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from w2sjax import __version__, losses

    print(f"w2sjax {__version__}; losses: {', '.join(losses.__all__)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
