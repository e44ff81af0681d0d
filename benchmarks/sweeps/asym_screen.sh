#!/bin/bash
# The asym grid (a learned centre per group) in 32- and 64-column groups against the defaults, 300 steps, 5
# training runs sharing the GPU beside the g32 post-training rows. Usage: bash benchmarks/sweeps/asym_screen.sh
# Section 9 ran it when common.sh trained on `corpora` alone (pass --train-data "$QG_DATA/corpora" to repeat that).
export QG_SHARED_GPU=${QG_SHARED_GPU:-5}
source "$(dirname "$0")/common.sh"
A32="grid=asym group_size=32 embedding_group_size=32"
bg q448 --steps 300 --only quantgpt@4-4-8 --set $A32 --tag=-asym32
bg q888 --steps 300 --only quantgpt@8-8-8 --set $A32 --tag=-asym32
bg q228a32 --steps 300 --only quantgpt@2-2-8 --set $A32 --tag=-asym32
bg q228a64 --steps 300 --only quantgpt@2-2-8 --set grid=asym group_size=64 embedding_group_size=64 --tag=-asym64
bg q448lr --steps 300 --only quantgpt@4-4-8 --set $A32 lr=1e-4 --tag=-asym32-lr1e-4
bg float --only float
bg ptq --only rtn@4-4-8 rtn@8-8-8 gptq@4-4-8 --ptq-group-size 32 --tag=-g32
finish
