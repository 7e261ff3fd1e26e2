"""Build the compiled parts of convkit at install time.

Packages: ``convkit`` (the core) and ``convkit_backends`` (the built-in
backends, one folder each under ``backends/``). Compiled code: the cffi
module of the C backend (``csrc/build_ffi.py``) and any Cython ``.pyx``
under ``backends/``. Only the machine's C compiler is needed.
"""

import os
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent


def backend_packages():
    return ["convkit_backends"] + [f"convkit_backends.{p}" for p in find_packages("backends")]


def cython_extensions():
    pyx = sorted(ROOT.glob("backends/*/*.pyx"))
    if not pyx:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            "convkit_backends." + ".".join(p.relative_to(ROOT / "backends").with_suffix("").parts),
            [str(p.relative_to(ROOT))],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
        for p in pyx
    ]
    return cythonize(exts, compiler_directives={"language_level": "3"})


# A checkout without the C sources still installs; the `c` backend then
# reports itself unavailable with the reason.
CFFI_MODULES = ["csrc/build_ffi.py:ffibuilder"] if (ROOT / "csrc" / "build_ffi.py").exists() else []

class ParallelBuildExt(build_ext):
    """``build_ext`` compiling the extensions side by side on every core (unless ``-j`` says otherwise).

    The Cython convolution module alone takes most of a minute; on 2 cores the whole build went
    from 102 to 81 s, which counts against CI's 10 minutes.
    """

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    packages=find_packages(include=["convkit", "convkit.*"]) + backend_packages(),
    package_dir={"convkit": "convkit", "convkit_backends": "backends"},
    cffi_modules=CFFI_MODULES,
    ext_modules=cython_extensions(),
)
