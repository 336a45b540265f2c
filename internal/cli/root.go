package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/spec"
)

// Exit codes of the command-line contract.
const (
	ExitOK          = 0
	ExitFailure     = 1 // the command ran and found a failure
	ExitBadInput    = 2 // the input is wrong; the message names file, line and field
	ExitOperational = 3 // I/O, network, provider
)

// env is what every command shares: the streams and the global flags.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	output string // "text" or "json"
}

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// badInput marks err as the user's input being wrong (exit 2).
func badInput(err error) error { return &exitError{code: ExitBadInput, err: err} }

// badInputf formats a bad-input error.
func badInputf(format string, args ...any) error { return badInput(fmt.Errorf(format, args...)) }

// errFailed is returned once a command has printed its result and that
// result is a failure (error findings, a dropped trace with --expect, a failed
// check). Nothing more is printed for it.
var errFailed = &exitError{code: ExitFailure, err: errors.New("failed")}

// exitCode maps an error to the contract's exit codes. Spec errors are bad
// input; anything not otherwise marked is operational.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var se spec.Errors
	if errors.As(err, &se) {
		return ExitBadInput
	}
	return ExitOperational
}

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, output: "text"}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if err != errFailed {
		if code == ExitOperational && isCobraUsageError(err) {
			code = ExitBadInput
		}
		e.printError(err)
	}
	return code
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "standby",
		Short: "Open-source site recovery: replicate VM disks, plan the recovery network, fail over",
		Long: `standby keeps a live copy of virtual machines' disks at a recovery site, cuts
recovery points, checks the recovery network design against what Azure allows,
and runs drills and failovers of whole applications, networks included.

Every command takes -o json. Exit codes: 0 success, 1 a failure was found,
2 bad input, 3 an operational error.`,
		Example: `  standby net check -f examples/hub-spoke-two-circuits.yaml
  standby net plan -f examples/single-circuit-same-ip.yaml -o json
  standby net trace -f examples/hub-spoke-two-circuits.yaml --from hq/client --to 10.1.0.4`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if e.output != "text" && e.output != "json" {
				return badInputf("-o %q: want text or json", e.output)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVarP(&e.output, "output", "o", "text", "output format: text or json")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return badInput(err) })
	root.AddCommand(subcommands(e)...)
	return root
}

// isCobraUsageError tells cobra's own argument errors (unknown command,
// wrong number of args) apart from operational ones.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "unknown flag", "unknown shorthand", "required flag", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// groupRunE makes a command family refuse unknown subcommands (exit 2)
// instead of printing help and succeeding; with no arguments it shows help.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return badInputf("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}
