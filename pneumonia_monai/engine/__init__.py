"""Pieces of the MONAI bundle that are too long for a config expression."""
