#!/usr/bin/env bash
# Train on a multi-host Cloud TPU VM pod slice: the same command on every host, one process per host.
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#   launch/tpu_pod.sh my-v4-64 us-central2-b /path/to/jaxseg/configs/voc_upernet_convnext_t_pirat.py \
#       gs://bucket/runs/pirat-voc --config.data.data_dir=gs://bucket/tensorflow_datasets
# Requirements: jaxseg installed on every host (e.g. `pip install -e .[tpu]` style setup done by you),
# WORKDIR and the data directory on storage every host can reach (a GCS bucket). JAX discovers the pod
# topology itself; JAXSEG_DISTRIBUTED=1 makes jaxseg call jax.distributed.initialize() on each host.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
command="cd ~/jaxseg && . .venv/bin/activate && JAXSEG_DISTRIBUTED=1 jaxseg train '$config' --workdir '$workdir' $*"
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$command"
