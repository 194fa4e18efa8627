"""patchwarden: contract-bound software updates for customer systems on Kubernetes."""

__version__ = "0.1.0"
