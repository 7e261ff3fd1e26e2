#!/usr/bin/env bash
# Build the C backend and the Cython backend's extensions with AddressSanitizer +
# UndefinedBehaviorSanitizer into a temporary directory and run their tests (and,
# with --conformance, the conformance suite) against that build. Nothing in the
# work tree changes.
#
#   scripts/sanitize.sh                 # tests/test_c_backend.py, tests/test_cython_backend.py under ASan/UBSan
#   scripts/sanitize.sh --conformance   # ... then `convkit conformance --backend c|cython --full`
#   PYTHON=/path/to/python scripts/sanitize.sh -k pool   # extra args go to pytest
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
"$PY" -c "import Cython, scipy" 2>/dev/null || { echo "sanitize.sh: needs Cython and scipy in $PY (pip install Cython scipy)" >&2; exit 2; }
CONFORMANCE=0
if [[ "${1:-}" == "--conformance" ]]; then
    CONFORMANCE=1
    shift
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# A copy of the convkit_backends package whose c/ holds the sanitized module.
cp -r "$ROOT/backends" "$TMP/convkit_backends"
find "$TMP/convkit_backends" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
(cd "$ROOT" && CONVKIT_C_SANITIZE=1 CONVKIT_C_BUILD_DIR="$TMP/convkit_backends/c" "$PY" csrc/build_ffi.py >/dev/null)
rm -rf "$TMP/convkit_backends/c/_build_tmp"

# The Cython extensions, cythonized and compiled from the copy (-O1 keeps stack traces readable).
"$PY" - "$TMP" >/dev/null <<'PYEOF'
import glob, os, sys
from Cython.Build import cythonize
from setuptools import Extension, setup

tmp = sys.argv[1]
os.chdir(tmp)
san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
exts = [Extension("convkit_backends.cython." + os.path.basename(p)[:-4], [p],
                  extra_compile_args=["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp", *san],
                  extra_link_args=["-fopenmp", *san])
        for p in sorted(glob.glob("convkit_backends/cython/*.pyx"))]
setup(name="convkit-sanitized", ext_modules=cythonize(exts, compiler_directives={"language_level": "3"}, quiet=True),
      script_args=["build_ext", "--inplace", "--build-temp", os.path.join(tmp, "_cy_build")])
PYEOF
rm -rf "$TMP/_cy_build" "$TMP/build"

CC=${CC:-gcc}
# Python itself is not built with ASan: the runtime must be loaded first.
PRELOAD="$("$CC" -print-file-name=libasan.so) $("$CC" -print-file-name=libubsan.so)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export PYTHONPATH="$TMP:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=passive

run() { LD_PRELOAD="$PRELOAD" "$PY" "$@"; }

run -c 'import convkit_backends.c.backend as b; ffi, lib = b.load(); info = ffi.string(lib.ck_build_info()).decode()
assert "AddressSanitizer" in info, info
print("sanitized build:", info, "from", b.load.__module__, b.__file__)'

run -c 'import convkit_backends.cython._conv as m, convkit_backends.cython._pool as p, subprocess
for mod in (m, p):
    assert "__asan_init" in subprocess.run(["nm", "-D", mod.__file__], capture_output=True, text=True).stdout, mod
print("sanitized build:", m.__file__, p.__file__)'

cd "$TMP"
run -m pytest -q -p no:cacheprovider -o addopts="" "$ROOT/tests/test_c_backend.py" "$ROOT/tests/test_cython_backend.py" "$@"

if [[ $CONFORMANCE == 1 ]]; then
    run -m convkit conformance --backend c --full
    run -m convkit conformance --backend cython --full
fi
