"""ka: clone one golden Linux machine onto many machines at once over a TCP chain."""

__version__ = "0.1.0"
