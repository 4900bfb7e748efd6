#!/usr/bin/env bash
# Whole-slide inference on several ranks with torchrun:
#   tools/dist_infer_slide.sh CONFIG CHECKPOINT GPUS SLIDE [SLIDE ...] --out DIR [infer_slide.py args...]
# The slides are dealt to the ranks (largest first); rank 0 writes DIR/cohort_summary.csv.
# On a machine without CUDA the ranks run on the CPU with the gloo backend.
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/infer_slide.py" "$CONFIG" "$CHECKPOINT" "${@:4}" --launcher pytorch
