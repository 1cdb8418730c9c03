"""mprpcgen: typed servers and clients for pymprpc from interface (.idl) files."""

__version__ = "0.1.0"
