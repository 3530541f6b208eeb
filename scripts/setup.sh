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
.venv/bin/python -m pip install --quiet -r requirements.txt
echo "environment ready: $here/.venv"
