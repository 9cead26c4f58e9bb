"""The Docker engine's mutual TLS on :2376: settings, the private CA, apply, checks."""
