"""The paper as data and the kit that holds models and ops against it.

- ``conformance.spec``: the three networks of Szegedy et al. 2016 transcribed from the
  paper, with the ``Decision`` records where the paper contradicts itself;
- ``conformance.checker``: holds a built model (port, torch twin, upstream Lucid) against
  the spec, item by item (``python -m conformance check``);
- ``conformance.ops``: differential tests of Lucid's ops against torch
  (``python -m conformance ops``).

Nothing in ``lucid_inception`` imports this package: the spec never builds a model.
"""

__all__: list[str] = []
