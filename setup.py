"""Build script: cythonizes the core with the compiler directives set in one place.

Set EMBCACHE_DEBUG=1 to build with bounds checks, wraparound, line tracing and
assertions turned back on (slower, for debugging and coverage).
Set EMBCACHE_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer
(UBSan fatal); see tools/sanitize.sh for how to run the tests against such a build.
Set EMBCACHE_RELEASE=1 for a release build (tools/release.sh): no debug info
(-g0 after the interpreter's own -g) and a stripped shared object (-s), which
makes the wheel's .so about a sixth of its default size.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("EMBCACHE_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("EMBCACHE_SANITIZE", "") not in ("", "0")
RELEASE = os.environ.get("EMBCACHE_RELEASE", "") not in ("", "0")
if RELEASE and (DEBUG or SANITIZE):
    raise SystemExit("EMBCACHE_RELEASE=1 excludes EMBCACHE_DEBUG and EMBCACHE_SANITIZE")
SANITIZE_FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=undefined",
]

directives = {
    "language_level": 3,
    "embedsignature": True,
    "freethreading_compatible": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "linetrace": DEBUG,
}
# NPY_TARGET_VERSION: the oldest numpy the extension runs on (pyproject's numpy>=1.23),
# whatever numpy builds it; 1.22+ has the per-array memory handler core/row_arrays.h sets.
macros = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
]
if DEBUG:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
else:
    macros.append(("NDEBUG", None))
if SANITIZE:
    macros.append(("EMBC_NO_ROW_POOL", "1"))  # core/row_arrays.h: ASan sees every free

extensions = [
    Extension(
        "embcache._core",
        ["embcache/_core.pyx"],
        include_dirs=[numpy.get_include(), "embcache"],
        define_macros=macros,
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3"])
        + (SANITIZE_FLAGS + ["-O1", "-g"] if SANITIZE else [])
        + (["-g0"] if RELEASE else []),
        extra_link_args=(SANITIZE_FLAGS if SANITIZE else []) + (["-s"] if RELEASE else []),
    ),
    Extension(
        "embcache.shared._segment",
        ["embcache/shared/_segment.pyx"],
        include_dirs=[numpy.get_include(), "embcache"],
        define_macros=macros,
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3"])
        + (SANITIZE_FLAGS + ["-O1", "-g"] if SANITIZE else [])
        + (["-g0"] if RELEASE else []),
        extra_link_args=(SANITIZE_FLAGS if SANITIZE else []) + (["-s"] if RELEASE else []),
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
