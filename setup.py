"""Package discovery for hope_jax.

The top-level `kernels/` folder installs as `hope_jax.kernels` (a bare `kernels` module already
exists on PyPI), so its packages are mapped here; everything else is declared in pyproject.toml.
"""
from setuptools import find_packages, setup

packages = ["hope_jax"] + [f"hope_jax.{p}" for p in find_packages("hope_jax")]
packages += ["hope_jax.kernels"] + [f"hope_jax.kernels.{p}" for p in find_packages("kernels")]

setup(packages=packages, package_dir={"hope_jax": "hope_jax", "hope_jax.kernels": "kernels"})
