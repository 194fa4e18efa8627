"""The controllers, one module per kind: ManagedSystems, UpdateRuns, UpdateRequests.
None imports another (an import-linter contract in ``make lint``)."""
