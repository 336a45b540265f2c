// Package api holds the wire types of the daemon's HTTP API: what the
// server writes and the command line reads. They are plain structs with
// JSON tags and no behaviour beyond small helpers, so that both sides agree
// on one definition. Field names are part of the command-line contract
// (`-o json`): add fields, never rename them.
//
// It imports nothing from the project.
package api
