package main

import (
	"fmt"
	"io"

	"cloud.google.com/go/pubsub/v2"
	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/provision"
)

func init() { register(newProvisionCmd) }

func newProvisionCmd() *cobra.Command {
	var (
		common   bqCommon
		cfg      provision.Config
		dataset  string
		dryRun   bool
		attempts int
	)
	c := &cobra.Command{
		Use:   "provision --project P [--dry-run] [--bigquery-dataset DATASET]",
		Short: "Create, idempotently, each event type's Pub/Sub topics and ingest subscription (and BigQuery tables)",
		Long: `provision reads the schema registry and makes sure that, per event type T, these exist as
configured (created when missing, updated when they drifted, left alone otherwise):

  topic         projects/P/topics/<prefix>T              (every version of T; messages carry schema_version)
  topic         projects/P/topics/<prefix>T-deadletter
  subscription  projects/P/subscriptions/<prefix>T-ingest  (dead-letter policy, retry backoff)
  with --bigquery-dataset DATASET: the table DATASET.T_v<N> of every version (hour-partitioned, clustered)

--dry-run prints the plan and changes nothing. A second run changes nothing. Honours
PUBSUB_EMULATOR_HOST. Topic schemas are not attached (see the provision package doc).

Examples:
  lockstream provision --project my-proj --dry-run
  lockstream provision --project my-proj --bigquery-dataset events`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if common.project == "" {
				return fmt.Errorf("--project is required (or set GOOGLE_CLOUD_PROJECT)")
			}
			cfg.Project, cfg.MaxDeliveryAttempts = common.project, attempts
			client, err := pubsub.NewClient(ctx, common.project)
			if err != nil {
				return err
			}
			defer client.Close()
			if dataset != "" {
				bqc, err := common.client(ctx)
				if err != nil {
					return err
				}
				defer bqc.Close()
				cfg.BigQuery = &bq.Loader{Client: bqc, Dataset: dataset}
			}
			plan, err := provision.Build(ctx, client, cfg)
			if err != nil {
				return err
			}
			printProvisionPlan(cmd.OutOrStdout(), plan, dryRun)
			if dryRun || plan.Pending() == 0 {
				return nil
			}
			if err := plan.Apply(ctx); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d changes\n", plan.Pending())
			return nil
		},
	}
	common.flags(c)
	fl := c.Flags()
	fl.BoolVar(&dryRun, "dry-run", false, "print the plan, change nothing")
	fl.StringVar(&dataset, "bigquery-dataset", "", "also create the BigQuery table of every version in this dataset")
	addAlias(fl, "bigquery", "bigquery-dataset")
	fl.StringVar(&cfg.Prefix, "prefix", "lockstream-", "prefix of every topic and subscription name")
	fl.DurationVar(&cfg.AckDeadline, "ack-deadline", 0, "ingest subscription ack deadline (0: 60s)")
	fl.IntVar(&attempts, "max-delivery-attempts", 0, "deliveries before a message goes to the dead-letter topic (0: 10)")
	fl.DurationVar(&cfg.MinBackoff, "min-backoff", 0, "redelivery backoff, minimum (0: 10s)")
	fl.DurationVar(&cfg.MaxBackoff, "max-backoff", 0, "redelivery backoff, maximum (0: 10m)")
	return c
}

func printProvisionPlan(w io.Writer, p *provision.Plan, dryRun bool) {
	for _, c := range p.Changes {
		line := fmt.Sprintf("%-10s %-15s %s", c.Action, c.Kind, c.Name)
		if c.Detail != "" {
			line += "  " + c.Detail
		}
		fmt.Fprintln(w, line)
	}
	switch {
	case p.Pending() == 0:
		fmt.Fprintln(w, "everything is provisioned: nothing to do")
	case dryRun:
		fmt.Fprintf(w, "dry run: %d changes planned, none made\n", p.Pending())
	}
}
