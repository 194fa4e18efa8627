//go:build tools

// Package tools pins github.com/kubernetes-csi/external-snapshotter/v8, built for the real-node dev cluster.
// Nothing here is part of the patchwarden product.
package tools

import (
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
)
