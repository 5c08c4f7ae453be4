"""The command line (`python -m locdiff.cli …`, `locdiff …`): thin commands that parse, call a use case, print."""

from locdiff.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
