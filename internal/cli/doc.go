// Package cli is the command tree of standby. It is the only package that
// wires concrete implementations together: it parses flags, loads the spec,
// calls the domain packages and renders their results as text or JSON through
// one printer. Every command is built by a constructor and runs a
// runX(ctx, opts) function; there are no package globals.
//
// Exit codes (DESIGN.md, "The command line contract"): 0 success, 1 the
// command ran and found a failure, 2 bad input, 3 an operational error.
package cli
