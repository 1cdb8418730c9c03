"""mprpcgen: typed servers and clients for pymprpc from interface (.idl) files."""

# One version for the whole distribution: written once, in pymprpc/__init__.py.
from pymprpc import __version__

__all__ = ["__version__"]
