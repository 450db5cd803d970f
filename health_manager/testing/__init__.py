"""Fakes shipped with the package for unit tests, each verified against its interface."""
