package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowsensor/flowsensor/sinks/parquet"
)

func newCompactCmd() *cobra.Command {
	var opts parquet.CompactOptions
	var targetMiB int64
	cmd := &cobra.Command{
		Use:   "compact [flags] DIR",
		Short: "Merge the small Parquet files of closed partitions",
		Long: `Merge the small Parquet files of each closed hour partition under DIR (an
output directory, or its flows/ folder) into files of about --target-mib.
Each merged file is checked to hold exactly the rows of its inputs before it
is published and they are removed; files still being written are never
touched, so it is safe to run beside a running sensor (e.g. from cron).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if targetMiB < 1 {
				return fmt.Errorf("--target-mib: %d, want at least 1", targetMiB)
			}
			if opts.MinAge < 0 {
				return fmt.Errorf("--min-age: %v is negative", opts.MinAge)
			}
			opts.TargetBytes = targetMiB << 20
			st, err := parquet.Compact(args[0], opts)
			verb := "merged"
			if opts.DryRun {
				verb = "would merge"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "flowsensor: compact: %d closed partitions, %s %d files into %d (%d rows), %d files of another schema left alone\n",
				st.Partitions, verb, st.Merged, st.Written, st.Rows, st.Skipped)
			return err
		},
	}
	cmd.Flags().Int64Var(&targetMiB, "target-mib", 128, "size of the merged files, MiB")
	cmd.Flags().DurationVar(&opts.MinAge, "min-age", 2*time.Hour, "only partitions whose hour ended at least this long ago")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "say what would be merged, change nothing")
	return cmd
}
