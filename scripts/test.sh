#!/usr/bin/env bash
# Install, then run the whole test suite (GL tests under a virtual X server when one is available).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export QT_QPA_PLATFORM=offscreen
status=0
python3 -m pytest -q -m "not gl" tests || status=$?
if command -v xvfb-run >/dev/null 2>&1 && [ -d tests/gl ]; then
  QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" python3 -m pytest -q -m gl tests/gl || status=$?
fi
exit $status
