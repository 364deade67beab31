#!/usr/bin/env bash
# The timing measurements of the foundation issue, in one go, meant for a QUIET machine (nothing else running:
# check `uptime` first; timings under load are not worth committing). About 45 minutes on 2 cores.
#   bash benchmarks/timing_issue2.sh
# 1. peers' venvs (idempotent), 2. SAC steps/s vs floor, SB3, sbx, 3. MBPO ms/step vs mbrl-lib,
# 4. how costs grow with data. Each script writes benchmarks/results/<name>.json + .png.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
uptime
for p in mbrl sb3 sbx; do bash benchmarks/peers/setup.sh "$p"; done
$PY benchmarks/sac_speed.py --widths 256 512 --rounds 2
$PY benchmarks/mbpo_speed.py --presets inv_pendulum halfcheetah --window 1000 --rounds 1
$PY benchmarks/mbpo_scale.py
uptime
