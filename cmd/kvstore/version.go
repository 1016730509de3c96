package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kvstore/kvstore/internal/buildinfo"
)

// newVersionCmd is `kvstore version`: the build this binary is, as
// `kvstore --version` prints it too.
func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Long: `version prints the release version (set at link time with
-ldflags "-X github.com/kvstore/kvstore/internal/buildinfo.Version=v1.2.3",
"devel" otherwise), the VCS commit and the Go version that built it.
Nodes log the same at start, export it as kvstore_build_info and report it
in Status (kvstore members shows each node's).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Get())
			return err
		},
	}
}
