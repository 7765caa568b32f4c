"""Datasets, protocols and safe image loading."""
