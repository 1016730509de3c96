package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envName is the environment variable that sets flag name: KVSTORE_ and the
// name in upper case with dashes as underscores (--session-ttl:
// KVSTORE_SESSION_TTL).
func envName(name string) string {
	return "KVSTORE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv sets every flag of cmd not given on the command line from its
// environment variable, if that is set. A bad value is an error naming both.
func bindEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if serr := cmd.Flags().Set(f.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q (for --%s): %w", envName(f.Name), v, f.Name, serr)
		}
	})
	return err
}
