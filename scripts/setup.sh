#!/usr/bin/env bash
# Create .venv (Python 3.10: fast-tokenizer-python has no wheels for newer
# Pythons) and install the pinned CPU stack. Safe to re-run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
if [ ! -x .venv/bin/python ]; then
  py=""
  for candidate in "${PYTHON:-}" "$(command -v pyenv >/dev/null 2>&1 && PYENV_VERSION=3.10.13 pyenv which python 2>/dev/null || true)" \
                   "$HOME/.pyenv/versions/3.10.13/bin/python" python3.10; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
  if [ -z "$py" ]; then
    echo "Python 3.10 not found: install it (e.g. pyenv install 3.10.13) or set PYTHON=/path/to/python3.10" >&2
    exit 1
  fi
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Every package pinned to the environment the tests last passed in, so a
# later install gets the same one (refresh: see constraints/README.md).
version="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
constraints="constraints/python$version.txt"
if [ -f "$constraints" ]; then
  .venv/bin/python -m pip install --quiet -r requirements.txt -c "$constraints"
else
  echo "no $constraints: installing the newest versions requirements.txt allows" >&2
  .venv/bin/python -m pip install --quiet -r requirements.txt
fi
echo "environment ready: $here/.venv"
