#!/usr/bin/env bash
# Train on this machine: every local device (CPU, GPUs or a single TPU VM) in one process.
#   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
#   launch/local.sh synthetic:pgd-at runs/at --config.train.steps=300
# Simulate N devices on a CPU with JAXSEG_FAKE_DEVICES=N (useful to test sharding without accelerators).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
if [[ -n "${JAXSEG_FAKE_DEVICES:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${JAXSEG_FAKE_DEVICES}"
fi
exec jaxseg train "$config" --workdir "$workdir" "$@"
