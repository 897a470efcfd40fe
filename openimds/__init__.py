"""openimds: an instance metadata service for multi-tenant clouds."""

__version__ = "0.1.0"
