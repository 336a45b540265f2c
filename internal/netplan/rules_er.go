package netplan

func erRules() []Rule { return nil }
