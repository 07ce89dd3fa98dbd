#!/usr/bin/env bash
# Run the test suite on other Python versions, each in its own fresh venv:
#   bash tests/run_python_matrix.sh 3.10 3.13
#   bash tests/run_python_matrix.sh --check 3.10 3.13   # only find the interpreters
# For each X.Y it finds the interpreter (pyenv's newest X.Y.*, else pythonX.Y on PATH),
# creates ${TMPDIR:-/tmp}/ci-venv-pyXY (not "pyvision-*": the suite checks that it
# leaves no such folder in the temp dir), installs '.[test]' and runs the README's
# pytest command there. Debian packages are not installed here (see
# tests/install_debian_packages.sh). Extra pytest options go in PYTEST_ADDOPTS.
# Every version runs even if an earlier one fails; the exit code is non-zero if any
# venv, install or test run failed, and the last lines say how each one went.
set -euo pipefail
cd "$(dirname "$0")/.."
check_only=false
[ "${1:-}" = --check ] && { check_only=true; shift; }
[ $# -gt 0 ] || { echo "usage: $0 [--check] X.Y [X.Y ...]" >&2; exit 2; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# The newest interpreter for X.Y: pyenv's versions first (CI machines have them), then PATH.
find_python() {
    local want=$1 root candidates py
    root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
    candidates=$(printf '%s\n' "$root/versions/$want".*/bin/python | grep -E "/$want\.[0-9]+/bin/python$" \
                 | sort -V -r || true)
    for py in $candidates $(command -v "python$want" || true); do
        if [ -x "$py" ] && [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
                                2>/dev/null)" = "$want" ]; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

# Find every interpreter before spending minutes on the first one.
pythons=()
for want in "$@"; do
    if ! py=$(find_python "$want"); then
        echo "error: no Python $want found (looked for ${PYENV_ROOT:-~/.pyenv}/versions/$want.*/bin/python" \
             "and python$want on PATH); install it with 'pyenv install $want'" >&2
        exit 2
    fi
    pythons+=("$py")
    $check_only && echo "Python $want: $py"
done
$check_only && exit 0

status=0
results=()
wants=("$@")
for i in "${!wants[@]}"; do
    want=${wants[$i]} py=${pythons[$i]}
    venv="${TMPDIR:-/tmp}/ci-venv-py${want/./}"
    log="$venv.log"
    echo "=== Python $want: $py, venv $venv ==="
    start=$SECONDS
    rc=0
    {
        "$py" -m venv --clear "$venv" &&
        "$venv/bin/python" -m pip install -q -e '.[test]' &&
        PYVISION_BROWSER_ARTIFACTS="${PYVISION_BROWSER_ARTIFACTS:-${TMPDIR:-/tmp}/pyvision_browser_artifacts}/py${want/./}" \
            "$venv/bin/python" -m pytest -q -p no:cacheprovider
    } 2>&1 | tee "$log" || rc=$?
    # pytest's closing line ("1 failed, 386 passed in 368.65s"), if pytest got that far.
    summary=$(grep -E '(passed|failed|errors?|no tests ran)[ ,].*in [0-9.]+s' "$log" | tail -n 1 || true)
    version=$("$py" -c 'import platform; print(platform.python_version())')
    results+=("Python $version: exit $rc after $((SECONDS - start)) s with install; ${summary:-no pytest summary, see above}")
    [ "$rc" -eq 0 ] || status=1
done

echo "=== Python matrix ==="
printf '%s\n' "${results[@]}"
exit "$status"
