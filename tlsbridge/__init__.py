"""tlsbridge: ACME certificates into Docker-run nginx, published atomically, reloaded, verified."""

__version__ = "0.1.0"
