"""The daemons a connection names, and which of them takes a container."""
