"""classh, the Cluster Administrator's ssh: run shell work over SSH on many hosts.

The command line lives in :mod:`classh.cli`; the Python API is re-exported here.
"""
__version__ = "0.2.0"
