// Package spec is the DR spec: its types, the strict loader, the defaults
// and the reference checks. Configuration is parsed and validated here once;
// the core packages take these plain values.
//
// The loader decodes YAML through gopkg.in/yaml.v3's node tree with a small
// reflective decoder of its own, because the contract wants every error to
// name the file, line, column and field path, and unknown fields to be
// errors; yaml.v3's KnownFields gives neither the column nor the path.
//
// It imports nothing from the project.
package spec
