"""cffi build script of the ``c`` backend's compiled module ``convkit_backends.c._ckernels``.

Used two ways:

- by ``setup.py`` (``cffi_modules=["csrc/build_ffi.py:ffibuilder"]``) during
  ``pip install``;
- as a script for in-place development builds: ``python csrc/build_ffi.py``
  writes the extension into ``backends/c/``. Set ``CONVKIT_C_SANITIZE=1`` to
  build with AddressSanitizer and UBSan, ``CONVKIT_C_BUILD_DIR`` to put the
  built module elsewhere (``scripts/sanitize.sh`` does both), and
  ``CONVKIT_C_CFLAGS`` to add compiler flags.

Flags: ``-O3 -fopenmp`` and no ``-march``: the hot loops carry
``target_clones`` so one binary uses AVX2 / AVX-512 where the CPU has them.
``-ffast-math`` stays off because max pooling must propagate NaN.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["convkit.c"]
DEPENDS = ["convkit.h", "ck_internal.h", "ck_gemm_impl.h", "ck_winograd_impl.h", "ck_conv_impl.h", "ck_direct_impl.h", "ck_pool_impl.h"]
MODULE = "convkit_backends.c._ckernels"


def _cdef() -> str:
    """The ABI declarations between the CFFI-BEGIN / CFFI-END markers of convkit.h."""
    text = (HERE / "convkit.h").read_text()
    body = text.split("/* CFFI-BEGIN */", 1)[1].split("/* CFFI-END */", 1)[0]
    return body


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", "-std=gnu11", "-fopenmp", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    ldflags = ["-fopenmp"]
    # Extra flags, e.g. CONVKIT_C_CFLAGS=-DCK_NO_CLONES (the portable kernels only, as on aarch64).
    cflags += os.environ.get("CONVKIT_C_CFLAGS", "").split()
    if os.environ.get("CONVKIT_C_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cflags = ["-O1", "-g"] + [f for f in cflags if f != "-O3"] + san
        ldflags += san
    return cflags, ldflags


def make_builder(absolute: bool = False) -> FFI:
    """The cffi builder; ``absolute`` source paths for builds outside setup.py's cwd."""
    ffi = FFI()
    ffi.cdef(_cdef())
    cflags, ldflags = _flags()
    # setuptools wants sources relative to setup.py (the cwd of a pip build);
    # ffi.compile() runs in its tmpdir, so the script build needs absolute ones.
    path = (lambda f: str(HERE / f)) if absolute else (lambda f: os.path.relpath(HERE / f))
    ffi.set_source(
        MODULE,
        '#include "convkit.h"\n',
        sources=[path(s) for s in SOURCES],
        include_dirs=[str(HERE)],
        depends=[path(s) for s in DEPENDS],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return ffi


ffibuilder = make_builder()


def main() -> None:
    """Build the module in place (``backends/c/``) or into ``$CONVKIT_C_BUILD_DIR``."""
    out = Path(os.environ.get("CONVKIT_C_BUILD_DIR") or (HERE.parent / "backends" / "c"))
    tmp = out / "_build_tmp" if os.environ.get("CONVKIT_C_BUILD_DIR") else HERE.parent / "build" / "cffi"
    tmp.mkdir(parents=True, exist_ok=True)
    so = make_builder(absolute=True).compile(tmpdir=str(tmp), verbose=bool(os.environ.get("VERBOSE")))
    # cffi writes convkit_backends/c/_ckernels*.so under tmpdir; move it next to
    # the package under the name a pip build gives it (cffi builds against the
    # limited API: .abi3.so), and drop other builds that would shadow it.
    built = Path(so)
    name = "_ckernels.abi3.so" if built.suffix == ".so" and not hasattr(sys, "gettotalrefcount") else built.name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("_ckernels.*"):
        if old.name != name and old.suffix in (".so", ".pyd"):
            old.unlink()
    target = out / name
    os.replace(built, target)
    print(target)


if __name__ == "__main__":
    sys.exit(main())
