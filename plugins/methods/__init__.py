"""Reward methods, registered by name."""
