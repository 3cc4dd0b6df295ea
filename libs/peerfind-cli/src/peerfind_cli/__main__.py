"""`python -m peerfind_cli`: the `peerfind` command."""

from peerfind_cli._main import main

main()
