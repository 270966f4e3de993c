"""Build targets: where customizers run (a Docker container, or a host over SSH)."""
