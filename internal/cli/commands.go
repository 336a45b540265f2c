package cli

import "github.com/spf13/cobra"

// subcommands lists the top-level command families. Each family lives in its
// own file with its constructor; add one line here to wire a new family.
func subcommands(e *env) []*cobra.Command {
	return []*cobra.Command{
		newNetCmd(e),
		newDemoCmd(e),
		newUpCmd(e),
		newStatusCmd(e),
		newPointsCmd(e),
		newDrillCmd(e),
		newFailoverCmd(e),
		newCommitCmd(e),
		newReprotectCmd(e),
		newFailbackCmd(e),
		newWorkloadCmd(e),
		newLabCmd(e),
		newReplicaCmd(e),
		newReceiverCmd(e),
		newAgentCmd(e),
		newJobsCmd(e),
	}
}
