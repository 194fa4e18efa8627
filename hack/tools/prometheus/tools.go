//go:build tools

// Package tools pins promtool, the real Prometheus tool the tests check
// metrics and alerting rules with.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
