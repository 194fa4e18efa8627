//go:build tools

// Package tools pins the upstream Kubernetes commands that the local control
// plane and the real-node dev cluster are built from. Nothing here is part of
// the patchwarden product.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet" // the real-node dev cluster (hack/tools.sh node)
)
