"""Build targets: where customizers run (a Docker container, a host over SSH, a local
QEMU VM).

`base` is the interface every target implements (and `KeptStates`, where a kind keeps
machine states for the step cache); `registry` maps each kind of target to its class.
`docker` (with `docker_systemd`, `systemd` and `vm_layer`: systemd as the container's
PID 1), `ssh` and `vm` (with `qemu`, `vm_process` and `snapshots`) are the targets;
`runner`, `posix`, `terminal` and `endpoint` what they share.
"""
