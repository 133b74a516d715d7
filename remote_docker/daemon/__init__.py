"""Reaching a daemon and trusting it: connections, certificates, ownership, registries, diagnosis."""
