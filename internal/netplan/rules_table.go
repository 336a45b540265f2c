package netplan

// allRules lists every rule with its check. Each family lives in its own
// file: rules_er.go, rules_gw.go, rules_pe.go, rules_rt.go, rules_as.go.
func allRules() []Rule {
	var rs []Rule
	rs = append(rs, erRules()...)
	rs = append(rs, gwRules()...)
	rs = append(rs, peRules()...)
	rs = append(rs, rtRules()...)
	rs = append(rs, asRules()...)
	return rs
}
