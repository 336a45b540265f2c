package netplan

import (
	"fmt"
)

// Rule is one rule of network-rules.md. Severity is the rule's usual
// severity; a rule that is "error / warning" reports each finding with the
// severity that fits.
type Rule struct {
	ID       string
	Severity string
	Scope    string
	Title    string
	check    func(c *checkCtx)
}

// checkCtx is what a rule sees: the plan, and the worlds of each state.
type checkCtx struct {
	p        *Plan
	rule     *Rule
	findings []Finding
	worlds   map[string]*world
}

func (c *checkCtx) world(state string) *world {
	if w, ok := c.worlds[state]; ok {
		return w
	}
	w := c.p.world(state)
	c.worlds[state] = w
	return w
}

// report adds a finding with the rule's severity and scope.
func (c *checkCtx) report(resource, hint, format string, args ...any) {
	c.reportAs(c.rule.Severity, c.rule.Scope, resource, hint, format, args...)
}

// reportAs adds a finding with an explicit severity and scope.
func (c *checkCtx) reportAs(sev, scope, resource, hint, format string, args ...any) {
	c.findings = append(c.findings, Finding{Rule: c.rule.ID, Severity: sev, Scope: scope, Resource: resource, Message: fmt.Sprintf(format, args...), Hint: hint})
}

// Rules returns every rule, in ID order.
func Rules() []Rule { return allRules() }

// Check runs every rule against the plan and returns the findings, errors
// first. Problems met while generating the target come first among them.
func Check(p *Plan) []Finding {
	c := &checkCtx{p: p, worlds: map[string]*world{}}
	for _, r := range allRules() {
		c.rule = &r
		r.check(c)
	}
	fs := append(append([]Finding{}, p.Problems...), c.findings...)
	return sortFindings(fs)
}

// CheckRule runs one rule; for tests.
func CheckRule(p *Plan, id string) []Finding {
	c := &checkCtx{p: p, worlds: map[string]*world{}}
	for _, r := range allRules() {
		if r.ID == id {
			c.rule = &r
			r.check(c)
		}
	}
	var fs []Finding
	for _, f := range p.Problems {
		if f.Rule == id {
			fs = append(fs, f)
		}
	}
	return sortFindings(append(fs, c.findings...))
}
