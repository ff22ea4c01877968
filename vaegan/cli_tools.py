"""Subcommands: filled in by the owning module."""


def register(sub) -> None:
    """Add this group's subcommands to the vaegan parser."""
