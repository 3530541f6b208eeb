#!/usr/bin/env bash
# Create the virtual environment (VENV, default .venv) with Python 3.10, 3.11
# or 3.12 (PYTHON=/path/to/python, else pyenv's 3.10.13, then 3.12, then 3.11)
# and install the pinned CPU stack; GPU=1 puts ONNX Runtime's GPU build, with
# its CUDA and cuDNN libraries, in place of the CPU build. Safe to re-run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${VENV:-.venv}"
supported='import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)'
if [ ! -x "$venv/bin/python" ]; then
  if [ -n "${PYTHON:-}" ]; then
    if ! "$PYTHON" -c "$supported" 2>/dev/null; then
      echo "PYTHON=$PYTHON is not Python 3.10, 3.11 or 3.12" >&2
      exit 1
    fi
    py="$PYTHON"
  else
    py=""
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in "$pyenv_root/versions/3.10.13/bin/python" \
                     $(ls -d "$pyenv_root"/versions/3.12.*/bin/python "$pyenv_root"/versions/3.11.*/bin/python 2>/dev/null | sort -rV) \
                     python3.10 python3.12 python3.11; do
      if "$candidate" -c "$supported" 2>/dev/null; then
        py="$candidate"; break
      fi
    done
    if [ -z "$py" ]; then
      echo "No Python 3.10, 3.11 or 3.12 found: install one (e.g. pyenv install 3.10.13) or set PYTHON=/path/to/python" >&2
      exit 1
    fi
  fi
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Every package pinned to the environment the tests last passed in, so a
# later install gets the same one (refresh: see constraints/README.md).
version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
constraints="constraints/python$version.txt"
if [ -f "$constraints" ]; then
  "$venv/bin/python" -m pip install --quiet -r requirements.txt -c "$constraints"
else
  echo "no $constraints: installing the newest versions requirements.txt allows" >&2
  "$venv/bin/python" -m pip install --quiet -r requirements.txt
fi
if [ "${GPU:-0}" = 1 ]; then
  # The two builds share the onnxruntime module: only one may be installed.
  # 1.31.1 is a CUDA 13 build (Python 3.11+); 1.23.2, the newest for 3.10, CUDA 12.
  case "$version" in 3.10) ort_gpu=1.23.2 ;; *) ort_gpu=1.31.1 ;; esac
  "$venv/bin/python" -m pip uninstall --quiet -y onnxruntime
  "$venv/bin/python" -m pip install --quiet "onnxruntime-gpu[cuda,cudnn]==$ort_gpu"
fi
echo "environment ready: $venv (Python $version${GPU:+, GPU=$GPU})"
