#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: the Debian packages the tests and the demo use, and a
# virtual environment at .venv with edgeconf (editable) and every extra that runs on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# xcb libraries: the Qt window under Xvfb (PySide6 wheels bundle Qt but not these)
apt_packages="dataset-fashion-mnist ffmpeg xvfb libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing Debian packages:$missing"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.edgeconf-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
    echo "setup: installing edgeconf and its extras into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -c requirements/constraints.txt \
        -e '.[cpu,dev,torch,gui,pipeline,bench]'
    touch "$stamp"
fi
