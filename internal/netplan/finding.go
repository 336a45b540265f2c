package netplan

import "sort"

// Severities of a finding.
const (
	SevError   = "error"
	SevWarning = "warning"
	SevInfo    = "info"
)

// Scopes of a finding: which network state it speaks of.
const (
	ScopeSource   = "source"
	ScopeTarget   = "target"
	ScopeFailover = "failover"
	ScopeTest     = "test"
)

// Finding is one rule's verdict on one resource.
type Finding struct {
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	Scope    string `json:"scope"`
	Resource string `json:"resource"`
	Message  string `json:"message"`
	Hint     string `json:"hint,omitempty"`
}

// HasErrors reports whether any finding is an error.
func HasErrors(fs []Finding) bool {
	for _, f := range fs {
		if f.Severity == SevError {
			return true
		}
	}
	return false
}

var sevOrder = map[string]int{SevError: 0, SevWarning: 1, SevInfo: 2}

// sortFindings orders findings by severity, rule, resource, message, so
// that the same spec in any order gives the same output.
func sortFindings(fs []Finding) []Finding {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if sevOrder[a.Severity] != sevOrder[b.Severity] {
			return sevOrder[a.Severity] < sevOrder[b.Severity]
		}
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		return a.Message < b.Message
	})
	// Drop exact duplicates (a rule that sees one resource from two sides).
	out := fs[:0]
	for i, f := range fs {
		if i > 0 && f == fs[i-1] {
			continue
		}
		out = append(out, f)
	}
	return out
}
