"""The pure core: windows, policy, scheduling, builders, conditions, status derivation,
the run state machine, settings and the one time helper. It imports neither kubernetes,
kopf nor the runtime (an import-linter contract in ``make lint``)."""
