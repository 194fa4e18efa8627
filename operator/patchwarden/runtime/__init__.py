"""The runtime: the Kubernetes client wrapper, the watches (reflector), the work queue
and its workers, peering, the metrics and their endpoint."""
