package cli

import "github.com/spf13/cobra"

func newNetCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "net", Short: "Check, plan and trace the recovery network of a DR spec"}
}
