//go:build tools

// Package tools pins github.com/containerd/containerd/v2, built for the real-node dev cluster.
// Nothing here is part of the patchwarden product.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
)
