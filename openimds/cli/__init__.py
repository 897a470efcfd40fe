"""The `openimds` command line. Its surface is the module `main` (the console entry point
`openimds.cli.main:main`), which assembles one argparse tree from the per-part command modules
it names; each of those exposes `register(subparsers)` and is imported by `main` only.

Nothing is re-exported: binding the function `main` here would shadow the module of the same
name (`openimds.cli.main` would then be the function, not the module).
"""

__all__ = ["main"]
