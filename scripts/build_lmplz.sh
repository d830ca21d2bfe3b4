#!/usr/bin/env bash
# Build KenLM's `lmplz` (the estimator; the `kenlm` wheel has only the query module) into a
# cache outside the clone, for the tests that compare the project's Kneser–Ney bigram with it.
#
# Idempotent: exits at once when the binary is there. Otherwise it installs the Debian
# packages lmplz needs (only those missing; needs root or sudo), downloads the `kenlm` source
# distribution from PyPI with pip, and builds only the lmplz target with CMake.
# Output goes to a log file; one line is printed. Override the location with IMM_RAY_LMPLZ.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imm-ray/kenlm"
LMPLZ="${IMM_RAY_LMPLZ:-$CACHE/bin/lmplz}"
JOBS="${JOBS:-2}"
PYTHON="${PYTHON:-python3}"

if [ -x "$LMPLZ" ]; then
    echo "lmplz: $LMPLZ (cached)"
    exit 0
fi

mkdir -p "$CACHE"
LOG="$CACHE/build.log"
: >"$LOG"
trap 'echo "lmplz build failed; see $LOG" >&2' ERR

PACKAGES=(cmake g++ make libboost-program-options-dev libboost-system-dev
    libboost-thread-dev libboost-test-dev zlib1g-dev)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    {
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
            "${missing[@]}"
    } >>"$LOG" 2>&1
fi

WORK="$CACHE/src"
rm -rf "$WORK"
mkdir -p "$WORK"
{
    # pip needs setuptools and wheel to fetch an sdist; keep them out of the project's venv.
    "$PYTHON" -m venv "$WORK/pip-env"
    "$WORK/pip-env/bin/pip" install --quiet setuptools wheel
    "$WORK/pip-env/bin/pip" download kenlm --no-binary :all: --no-deps \
        --no-build-isolation --dest "$WORK"
    tar -xzf "$WORK"/kenlm-*.tar.gz -C "$WORK"
    SRC="$(find "$WORK" -maxdepth 1 -type d -name 'kenlm-*' | head -n 1)"
    cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DCOMPILE_TESTS=OFF
    cmake --build "$WORK/build" --target lmplz -- -j"$JOBS"
} >>"$LOG" 2>&1

mkdir -p "$(dirname "$LMPLZ")"
cp "$WORK/build/bin/lmplz" "$LMPLZ.tmp"
mv "$LMPLZ.tmp" "$LMPLZ"
rm -rf "$WORK"
echo "lmplz: built $LMPLZ (log: $LOG)"
