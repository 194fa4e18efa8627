//go:build tools

// Package tools pins the upstream kwok commands used by patchwarden's dev tooling.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
	_ "sigs.k8s.io/kwok/cmd/kwokctl"
)
