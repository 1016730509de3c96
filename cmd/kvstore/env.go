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
// environment variable, if that is set. A bad value is an error naming both
// (exit code exitUsage, as for a bad flag).
func bindEnv(cmd *cobra.Command) error {
	if _, err := applyEnv(cmd.Flags(), os.LookupEnv); err != nil {
		return &exitError{exitUsage, err}
	}
	return nil
}

// applyEnv sets every flag not given on the command line from its
// environment variable, if that is set. It returns how to name each flag's
// source in error messages: "--flag" or the variable's name.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) (from func(flag string) string, err error) {
	fromEnv := map[string]bool{}
	fs.VisitAll(func(fl *pflag.Flag) {
		if err != nil || fl.Changed || fl.Name == "help" || envless(fl) {
			return
		}
		v, ok := lookup(envName(fl.Name))
		if !ok {
			return
		}
		if serr := fs.Set(fl.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q (for --%s): %w", envName(fl.Name), v, fl.Name, serr)
			return
		}
		fromEnv[fl.Name] = true
	})
	return func(flag string) string {
		if fromEnv[flag] {
			return envName(flag)
		}
		return "--" + flag
	}, err
}

// documentEnv adds each flag's variable to its help text.
func documentEnv(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if !envless(fl) {
			fl.Usage += " [$" + envName(fl.Name) + "]"
		}
	})
}

// noEnvAnnotation marks a flag that only the command line may set.
const noEnvAnnotation = "kvstore_no_env"

// noEnv makes flag name command-line only: no environment variable sets it
// (one left in a unit file or a container spec would act at every start).
func noEnv(fs *pflag.FlagSet, name string) {
	if err := fs.SetAnnotation(name, noEnvAnnotation, []string{"true"}); err != nil {
		panic(err) // cannot happen: the flag was just defined
	}
}

func envless(fl *pflag.Flag) bool {
	_, ok := fl.Annotations[noEnvAnnotation]
	return ok
}
