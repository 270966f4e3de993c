"""Build targets: where customizers run (a Docker container, a host over SSH).

`base` is the interface every target implements, `registry` maps each kind of target to
its class; `docker` and `ssh` are the targets, `runner`, `posix` and `terminal` what they
share.
"""
