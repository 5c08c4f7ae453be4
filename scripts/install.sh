#!/usr/bin/env bash
# Install LocDiff with everything (torch pinned to the pair that open_clip's torchvision needs).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python3 -m pip install -q -e ".[all]" "torch==2.14.1" "torchvision==0.29.1"
# geoclip pins an old huggingface_hub; its code runs with the current one, so install it without its pins.
python3 -m pip install -q --no-deps "geoclip==1.3.0"
python3 -m pip install -q pandas geopy
