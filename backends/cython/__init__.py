"""The ``cython`` backend: every kernel of the contract in Cython 3 (OpenMP + scipy's BLAS).

See :mod:`convkit_backends.cython.backend` and https://convkit.readthedocs.io/en/latest/cython_backend/.
"""
