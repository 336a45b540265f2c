// Package examples holds the example DR specs. They are documentation, test
// inputs (every one is loaded by a test) and, embedded, the default spec of
// `standby demo`.
package examples

import "embed"

// Files holds every example spec.
//
//go:embed *.yaml
var Files embed.FS

// Quickstart is the spec that runs on one machine without root.
const Quickstart = "local-quickstart.yaml"
