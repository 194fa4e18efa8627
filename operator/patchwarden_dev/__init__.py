"""Developer tooling that is not shipped with the operator: the local dev clusters
(kwok and a real node) and the demo. Importable from the repository (``operator/``
on ``PYTHONPATH``, as the Makefile and pytest set it), not part of the wheel."""
