"""Cloud Foundry Health Manager 2.0, reimplemented on Twisted."""

__version__ = "0.2.0"
