"""The `optimum-layerwise` command line: one module per command, assembled by `main`."""

from .main import add_arguments, main, run_command


__all__ = ["add_arguments", "main", "run_command"]
