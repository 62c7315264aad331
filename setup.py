"""Only the C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "housing_api._fastpath",
            sources=["src/housing_api/_fastpath.c"],
            # Never -ffast-math: the kernel must compare and add exactly like scikit-learn.
            extra_compile_args=["-O3", "-std=c11"],
        ),
        Extension(
            "housing_api._batchjson",
            sources=["src/housing_api/_batchjson.c"],
            # -O3 unrolls the parser's per-character loops; -std=c11 keeps floating point exact
            # (no contraction into fused multiply-adds), which the parser's conversions rely on.
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "housing_api._rowkeys",
            sources=["src/housing_api/_rowkeys.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "housing_api._resp",
            sources=["src/housing_api/_resp.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
    ]
)
