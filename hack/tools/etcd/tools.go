//go:build tools

// Package tools pins the upstream etcd server used by the local control plane.
package tools

import _ "go.etcd.io/etcd/server/v3"
