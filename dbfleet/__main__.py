"""`python -m dbfleet ...` runs the `dbfleet` command."""

from dbfleet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
