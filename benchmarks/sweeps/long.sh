#!/bin/bash
# One longer run alone on the GPU: RUN (a study run name), STEPS, SET (TrainConfig overrides), TAG.
# Usage: RUN=quantgpt@2-2-8 STEPS=2500 SET="grid=asym" TAG=-asym64-long bash benchmarks/sweeps/long.sh
export QG_SHARED_GPU=${QG_SHARED_GPU:-1}
source "$(dirname "$0")/common.sh"
bg long --steps "$STEPS" --only "$RUN" ${SET:+--set $SET} --tag="$TAG"
finish
