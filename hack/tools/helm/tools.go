//go:build tools

// Package tools pins the upstream helm commands used by patchwarden's dev tooling.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
