#!/usr/bin/env bash
# bash run.sh                                   the built-in classification demo
# bash run.sh generate-demo                     the built-in generation demo
# bash run.sh INPUT MODEL_DIR OUTPUT [options]  a real run (bash run.sh --help)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# VENV: the environment scripts/setup.sh made (default .venv, relative to the repo).
venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$here/$venv" ;; esac
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "No environment at $venv yet: run '${VENV:+VENV=$VENV }bash scripts/setup.sh' first." >&2
  exit 1
fi
# Every PaddleNLP / Hugging Face cache stays inside the repo, never in $HOME.
export PPNLP_HOME="$here/.cache/paddlenlp" HF_HOME="$here/.cache/huggingface"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# Paddle's C++ info logging and Python deprecation chatter hide the report.
export GLOG_minloglevel="${GLOG_minloglevel:-2}" PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
if [ $# -eq 0 ] || [ "$1" = "demo" ] || [ "$1" = "generate-demo" ]; then
  exec "$python" -c 'import sys, pipeline; from scripts import run_demo; pipeline.exit_with(run_demo.main(sys.argv[1:]))' "${1:-demo}" "${@:2}"
fi
# Not `-m pipeline`: spawned worker processes import the main module again,
# and pipeline's imports (pandas) cost each one seconds it does not need.
exec "$python" -c 'import pipeline; pipeline.exit_with(pipeline.main())' "$@"
