package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/recovery"
)

// Commands that act on a running daemon (standby up): status, points and
// the plans' operations. Each operation starts a job, then follows its
// events until it ends or waits for an operator, and prints the job with
// its report.

type daemonOpts struct {
	server string
	detach bool
}

func (o *daemonOpts) flags(cmd *cobra.Command, follow bool) {
	cmd.Flags().StringVar(&o.server, "server", envOr("STANDBY_SERVER", defaultServer), "URL of the daemon's API (standby up)")
	if follow {
		cmd.Flags().BoolVar(&o.detach, "detach", false, "start the job and return at once")
	}
}

func newStatusCmd(e *env) *cobra.Command {
	var o daemonOpts
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Replication state and RPO of every protected VM, and where each plan stands",
		Example: `  standby status
  standby status -o json | jq '.vms[] | select(.alert)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st api.StatusReport
			if err := newAPIClient(o.server).do(cmd.Context(), "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			return e.render(st, func(w io.Writer) {
				fmt.Fprintf(w, "%s\n", st.Spec)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "VM\tCAPTURE\tSTATE\tRPO\tTHRESHOLD\tLAST POINT\tSHIPPED\tNOTE")
				for _, v := range st.VMs {
					note := v.Reason
					if v.Alert {
						note = "RPO above the policy's threshold " + note
					}
					state := v.State
					if p := v.Progress; p != nil && p.Total > 0 {
						state += fmt.Sprintf(" %d%%", p.Done*100/p.Total)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.VM, v.Capture, state, v.RPO, v.Threshold, v.LastPoint, byteSize(v.Shipped), note)
				}
				tw.Flush()
				for p, stage := range st.Plans {
					fmt.Fprintf(w, "plan %s: %s\n", p, stage)
				}
			})
		},
	}
	o.flags(cmd, false)
	return cmd
}

func newPointsCmd(e *env) *cobra.Command {
	var o daemonOpts
	cmd := &cobra.Command{
		Use:     "points VM",
		Short:   "A protected VM's recovery points",
		Example: `  standby points app1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pl api.PointList
			if err := newAPIClient(o.server).do(cmd.Context(), "GET", "/v1/vms/"+url.PathEscape(args[0])+"/points", nil, &pl); err != nil {
				return err
			}
			return e.render(pl, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tKIND")
				for _, p := range pl.Points {
					fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Seq, p.Time.Local().Format("2006-01-02 15:04:05.000"), p.Kind)
				}
				tw.Flush()
			})
		},
	}
	o.flags(cmd, false)
	return cmd
}

// operate posts an operation and follows its job.
func operate(ctx context.Context, e *env, o daemonOpts, op, plan string, req api.OperationRequest) error {
	c := newAPIClient(o.server)
	body, _ := json.Marshal(req)
	var j api.Job
	if err := c.do(ctx, "POST", "/v1/plans/"+url.PathEscape(plan)+"/"+op, body, &j); err != nil {
		return err
	}
	if !o.detach && !j.Status.Finished() && j.Status != api.StatusWaiting {
		if err := c.follow(ctx, j.ID, 0, e.followWriter()); err != nil {
			return err
		}
	}
	if err := c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(j.ID), nil, &j); err != nil {
		return err
	}
	if err := renderJob(e, j); err != nil {
		return err
	}
	if e.output == "text" && len(j.Report) > 0 && j.Status.Finished() {
		var r recovery.Report
		if json.Unmarshal(j.Report, &r) == nil {
			printReport(e.stdout, r)
		}
	}
	return nil
}

func printReport(w io.Writer, r recovery.Report) {
	if r.RTOText != "" {
		fmt.Fprintf(w, "RTO %s\n", r.RTOText)
	}
	for _, m := range r.Machines {
		fmt.Fprintf(w, "  %s at %s from point %d (%s): data loss %s", m.VM, m.Site, m.Point, m.PointTime.Local().Format("15:04:05.000"), m.DataLoss)
		if m.Records != nil {
			fmt.Fprintf(w, ", %d of %d records lost (the workload's own count)", m.Records.Lost, m.Records.AtSource)
		}
		fmt.Fprintln(w)
	}
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  check %s: %s %s\n", c.Detail, c.Status, c.Error)
	}
}

func newPlanOpCmd(e *env, op, use, short, example string, extra func(*cobra.Command, *api.OperationRequest)) *cobra.Command {
	var o daemonOpts
	var req api.OperationRequest
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return operate(cmd.Context(), e, o, op, args[0], req)
		},
	}
	o.flags(cmd, true)
	if extra != nil {
		extra(cmd, &req)
	}
	return cmd
}

func newDrillCmd(e *env) *cobra.Command {
	cmd := newPlanOpCmd(e, api.OpDrill, "drill PLAN", "Test failover of a plan in the isolated test network; replication goes on",
		"  standby drill contoso-app\n  standby drill cleanup contoso-app", nil)
	cmd.AddCommand(newPlanOpCmd(e, api.OpDrillCleanup, "cleanup PLAN", "Remove everything a drill made and prove nothing is left",
		"  standby drill cleanup contoso-app", func(c *cobra.Command, r *api.OperationRequest) {
			c.Flags().StringVar(&r.Drill, "drill", "", "the drill job to clean up (default: the plan's newest)")
		}))
	return cmd
}

func newFailoverCmd(e *env) *cobra.Command {
	return newPlanOpCmd(e, api.OpFailover, "failover PLAN [--planned] [--point latest|latest-app|SEQ|TIME]", "Fail a plan over to the recovery site, network included",
		"  standby failover contoso-app --planned        # stop the source, ship a final point: zero loss\n  standby failover contoso-app --point latest    # the source is lost: fence it, use the newest point",
		func(c *cobra.Command, r *api.OperationRequest) {
			c.Flags().BoolVar(&r.Planned, "planned", false, "planned failover: stop the source machines and ship a final point first")
			c.Flags().StringVar(&r.Point, "point", "", "unplanned failover: latest (default), latest-app, a sequence number or an RFC 3339 time")
		})
}

func newCommitCmd(e *env) *cobra.Command {
	return newPlanOpCmd(e, api.OpCommit, "commit PLAN", "Make a failover final: the recovered disks become the VMs' disks",
		"  standby commit contoso-app", nil)
}

func newReprotectCmd(e *env) *cobra.Command {
	return newPlanOpCmd(e, api.OpReprotect, "reprotect PLAN", "Replicate back to the old source, sending only blocks whose hashes differ",
		"  standby reprotect contoso-app", nil)
}

func newFailbackCmd(e *env) *cobra.Command {
	return newPlanOpCmd(e, api.OpFailback, "failback PLAN", "Planned failover back to the source site, with zero loss",
		"  standby failback contoso-app", nil)
}
