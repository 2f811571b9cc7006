"""Entry point for ``python -m ctrnn``."""

from ctrnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
