"""`python -m dbfleet ...` runs the `dbfleet` command."""

from dbfleet.ops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
