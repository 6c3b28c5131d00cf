#!/usr/bin/env bash
# Started by srun, one task per node, from an astrosage sbatch script (see job.sbatch.j2).
# Starts this node's processes with accelerate launch (or torchrun), every rank/address value
# derived from Slurm's variables, then runs `python -m astrosage.cli "$@"` in each process.
set -euo pipefail

: "${ASTROSAGE_NNODES:?set by the sbatch script}"
: "${ASTROSAGE_PROCS_PER_NODE:?set by the sbatch script}"
: "${MASTER_ADDR:?set by the sbatch script}"
: "${MASTER_PORT:?set by the sbatch script}"
NODE_RANK="${SLURM_NODEID:?launch_node.sh must run under srun}"
PYTHON="${ASTROSAGE_PYTHON:-python}"
LAUNCHER="${ASTROSAGE_LAUNCHER:-accelerate}"
TOTAL=$(( ASTROSAGE_NNODES * ASTROSAGE_PROCS_PER_NODE ))

echo "[astrosage] node ${NODE_RANK}/${ASTROSAGE_NNODES} on $(hostname -s): ${ASTROSAGE_PROCS_PER_NODE} process(es), master ${MASTER_ADDR}:${MASTER_PORT}"

if [ "${TOTAL}" -eq 1 ]; then
  # one process in all: no launcher, signals reach the training process directly
  exec "${PYTHON}" -m astrosage.cli "$@"
fi

if [ "${LAUNCHER}" = "torchrun" ]; then
  exec "${PYTHON}" -m torch.distributed.run \
    --nnodes "${ASTROSAGE_NNODES}" --nproc-per-node "${ASTROSAGE_PROCS_PER_NODE}" \
    --node-rank "${NODE_RANK}" --rdzv-backend c10d \
    --rdzv-endpoint "${MASTER_ADDR}:${MASTER_PORT}" --rdzv-id "${SLURM_JOB_ID:-astrosage}" \
    -m astrosage.cli "$@"
fi

CONFIG_ARGS=()
if [ -n "${ASTROSAGE_ACCELERATE_CONFIG:-}" ]; then
  CONFIG_ARGS=(--config_file "${ASTROSAGE_ACCELERATE_CONFIG}")
fi
exec "${PYTHON}" -m accelerate.commands.launch "${CONFIG_ARGS[@]}" \
  --multi_gpu --num_machines "${ASTROSAGE_NNODES}" --num_processes "${TOTAL}" \
  --machine_rank "${NODE_RANK}" --main_process_ip "${MASTER_ADDR}" --main_process_port "${MASTER_PORT}" \
  --rdzv_backend c10d --same_network --dynamo_backend no \
  -m astrosage.cli "$@"
