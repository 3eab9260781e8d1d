"""The astropix-hil HIL suite: real programs on real (or namespaced) hosts, checked from outside.

Run with ``pytest -p no:cacheprovider hil`` as root (CI topology) or ``pytest hil --bench
FILE`` (a bench of real machines). See ``docs/hil.rst``.
"""
