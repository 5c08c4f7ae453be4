#!/usr/bin/env bash
# Install LocDiff with everything (torch pinned to the pair that open_clip's torchvision needs).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python3 -m pip install -q -e ".[all]" "torch==2.14.1" "torchvision==0.29.1"
# geoclip pins an old huggingface_hub; its code runs with the current one. Its package is unpacked without
# pip metadata, so pip never reports the stale pin as a conflict (no "ERROR: pip's dependency resolver").
python3 scripts/install_geoclip.py
python3 -m pip install -q pandas geopy
