"""The command line: argument parsing and printing only; the engine does the work."""

from cutbook.cli.app import main

__all__ = ["main"]
