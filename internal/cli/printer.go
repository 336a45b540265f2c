package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/standby-dr/standby/internal/spec"
)

// render writes v as indented JSON with -o json, or calls text to write the
// human form of the same value. Both renderings come from one struct so they
// never disagree.
func (e *env) render(v any, text func(w io.Writer)) error {
	if e.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(e.stdout)
	return nil
}

// printError writes err to stderr: as {"error": ...} with -o json, else as
// "standby: ..." lines.
func (e *env) printError(err error) {
	if e.output == "json" {
		enc := json.NewEncoder(e.stderr)
		enc.SetIndent("", "  ")
		out := map[string]any{"error": err.Error(), "exitCode": exitCode(err)}
		var es spec.Errors
		if errors.As(err, &es) {
			out["problems"] = es
		}
		_ = enc.Encode(out)
		return
	}
	msg := strings.TrimRight(err.Error(), "\n")
	fmt.Fprintf(e.stderr, "standby: %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
}
