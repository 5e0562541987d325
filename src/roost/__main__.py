"""``python -m roost``: the ``roost`` command."""

from roost.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
