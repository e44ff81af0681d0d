#!/bin/bash
# The baselines in the same 32-column weight groups and 32-feature embedding groups as quantgpt's asym32 runs
# (pact, lsq and laq keep their symmetric grids; kd is mds with asym, without the contrastive term), 300 steps.
# Usage: bash benchmarks/sweeps/g32_baselines.sh
export QG_SHARED_GPU=${QG_SHARED_GPU:-5}
source "$(dirname "$0")/common.sh"
G32="group_size=32 embedding_group_size=32"
bg p448 --steps 300 --only pact@4-4-8 --set $G32 --tag=-g32
bg l448 --steps 300 --only laq@4-4-8 --set $G32 --tag=-g32
bg s448 --steps 300 --only lsq@4-4-8 --set $G32 --tag=-g32
bg k448 --steps 300 --only kd@4-4-8 --set grid=asym $G32 --tag=-asym32
bg p888 --steps 300 --only pact@8-8-8 --set $G32 --tag=-g32
bg ptq --only gptq@8-8-8 --ptq-group-size 32 --tag=-g32
finish
