"""Reusable neural-network layers."""
