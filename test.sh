#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run every test (slow end-to-end ones included).
#   ./test.sh                  # all tests
#   ./test.sh -m "not slow"    # the fast ones only
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1
exec python -m pytest "$@"
