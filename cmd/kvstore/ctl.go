package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvstore/kvstore/client"
)

// Exit codes of the command-line client.
const (
	exitOK       = 0
	exitFailed   = 1 // the operation failed and was not applied
	exitUsage    = 2 // bad command line
	exitNotFound = 3 // get: the key has no value
	exitUnknown  = 4 // a write failed and may or may not have been applied
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode maps an error from a command to the process exit code.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, client.ErrOutcomeUnknown):
		return exitUnknown
	}
	return exitFailed
}

type ctlFlags struct {
	endpoints  []string
	timeout    time.Duration // --command-timeout
	oldTimeout time.Duration // --timeout, its older name
	dial       time.Duration // --dial-timeout
	attempt    time.Duration
	json       bool
	cluster    string
	tls        tlsFlags
}

// ctlCommands are the command-line client's commands, in the spirit of
// etcdctl: get, put, delete, leader, members.
func ctlCommands() []*cobra.Command {
	var f ctlFlags
	withFlags := func(cmd *cobra.Command) *cobra.Command {
		fl := cmd.Flags()
		fl.StringSliceVar(&f.endpoints, "endpoints", []string{"127.0.0.1:7000"}, "nodes' addresses (host:port,...); the client moves to the next when one cannot serve")
		fl.DurationVar(&f.timeout, "command-timeout", defaultCommandTimeout, "how long the command may take")
		fl.DurationVar(&f.oldTimeout, "timeout", defaultCommandTimeout, "the older name of --command-timeout")
		_ = fl.MarkHidden("timeout")
		fl.DurationVar(&f.dial, "dial-timeout", defaultDialTimeout, "how long the command waits for a connection to any endpoint; it fails at once when every endpoint refuses the connection")
		fl.DurationVar(&f.attempt, "attempt-timeout", client.DefaultAttemptTimeout, "how long one node may take to answer before the client moves on to the next endpoint")
		fl.BoolVar(&f.json, "json", false, "print the result as JSON")
		fl.StringVar(&f.cluster, "cluster", "", "the cluster the endpoints must belong to (the nodes' --cluster): a node of another cluster refuses the command's calls; empty: no check")
		f.tls.add(fl, "this client (a client certificate of the nodes' CA)")
		cmd.Args = exactArgs(len(argNames(cmd)))
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			given, oldGiven := fl.Changed("command-timeout"), fl.Changed("timeout")
			if err := bindEnv(cmd); err != nil {
				return err
			}
			// --timeout, the older name, counts unless --command-timeout
			// was given: on the command line, or by the environment while
			// --timeout was not on the command line.
			if !given && fl.Changed("timeout") && (oldGiven || !fl.Changed("command-timeout")) {
				f.timeout = f.oldTimeout
			}
			return nil
		}
		documentEnv(cmd)
		return cmd
	}
	run := func(cmd *cobra.Command, do func(ctx context.Context, c *client.Client, out io.Writer) error) error {
		if err := f.validate(); err != nil {
			return &exitError{exitUsage, err}
		}
		tlsConfig, err := f.tls.clientConfig()
		if err != nil {
			return err
		}
		c, err := client.New(f.clientConfig(f.endpoints, tlsConfig))
		if err != nil {
			return &exitError{exitUsage, err}
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
		defer cancel()
		err = do(ctx, c, cmd.OutOrStdout())
		if errors.Is(err, client.ErrRefused) {
			return fmt.Errorf("%w [nothing listens at any endpoint: check --endpoints and that the nodes run]", err)
		}
		if errors.Is(err, client.ErrTLS) {
			return fmt.Errorf("%w [TLS: check --cert, --key and --ca]", err)
		}
		return err
	}
	get := withFlags(&cobra.Command{
		Use:   "get <key>",
		Short: "Read a key (prints its value; exit code 3 if it has none)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				v, found, err := c.Get(ctx, args[0])
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(out, map[string]any{"key": args[0], "value": v, "found": found}); err != nil {
						return err
					}
				} else if found {
					fmt.Fprintln(out, v)
				}
				if !found {
					return &exitError{exitNotFound, fmt.Errorf("key %q has no value", args[0])}
				}
				return nil
			})
		},
	})
	put := withFlags(&cobra.Command{
		Use:   "put <key> <value>",
		Short: "Set a key (exit code 4 if the outcome is unknown)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				if err := c.Put(ctx, args[0], args[1]); err != nil {
					return err
				}
				return printOK(out, f.json)
			})
		},
	})
	del := withFlags(&cobra.Command{
		Use:   "delete <key>",
		Short: "Remove a key (exit code 4 if the outcome is unknown)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				if err := c.Delete(ctx, args[0]); err != nil {
					return err
				}
				return printOK(out, f.json)
			})
		},
	})
	leader := withFlags(&cobra.Command{
		Use:   "leader",
		Short: "Print the leader's id and epoch, as the first endpoint that answers sees them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if st.Leader == "" {
					return fmt.Errorf("%s sees no leader: %w", st.Endpoint, client.ErrNoLeader)
				}
				if f.json {
					return printJSON(out, map[string]any{"leader": st.Leader, "epoch": st.Epoch, "seen_by": st.ID})
				}
				_, err = fmt.Fprintf(out, "%s epoch %d\n", st.Leader, st.Epoch)
				return err
			})
		},
	})
	members := withFlags(&cobra.Command{
		Use:   "members",
		Short: "List the nodes: live members (id, address, leader or follower, voter or non-voter, version, state if not ok) and voters that are down",
		Long: `List the nodes, one line each: "<id> <addr> <leader|follower> <voter|non-voter> <version>"
for each live member (the version it runs, kvstore version; "-" if it did not
answer), followed by its state when it is not ok (recovering: it
restarted without its data and counts toward no majority until the leader has
reconciled it; unreachable: it did not answer), and "<id> - down voter" for
each voter with no live member, then one line "settings: ..." with the
cluster-wide settings every node runs with (kvstore cluster settings).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				slices.SortFunc(st.Members, func(a, b client.Member) int { return strings.Compare(a.ID, b.ID) })
				if f.json {
					return printJSON(out, st)
				}
				states := f.memberStates(ctx, st.Members)
				for _, m := range st.Members {
					role := "follower"
					if m.ID == st.Leader {
						role = "leader"
					}
					voter := "non-voter"
					if slices.Contains(st.Voters, m.ID) {
						voter = "voter"
					}
					info := states[m.ID]
					line := fmt.Sprintf("%s %s %s %s %s", m.ID, m.Addr, role, voter, info.version)
					if info.state != "ok" {
						line += " " + info.state
					}
					if _, err := fmt.Fprintln(out, line); err != nil {
						return err
					}
				}
				voters := slices.Sorted(slices.Values(st.Voters))
				for _, v := range voters {
					if !slices.ContainsFunc(st.Members, func(m client.Member) bool { return m.ID == v }) {
						if _, err := fmt.Fprintf(out, "%s - down voter\n", v); err != nil {
							return err
						}
					}
				}
				// The cluster-wide settings, from the coordinator's record.
				if st.Settings != nil {
					_, err = fmt.Fprintf(out, "settings: %s\n", st.Settings)
				}
				return err
			})
		},
	})
	remove := withFlags(&cobra.Command{
		Use:   "remove <id>",
		Short: "Remove a voter (a node that is down for good, or one to retire); refused if the rest would lack a majority of live voters",
		Long: `Remove voter <id> from the voter record, through the leader. The change is
refused (exit code 1, nothing changed) if <id> is not a voter, if it is the
leader (stop it first, then remove it), or if the remaining voters would not
have a majority of live voters. A removed node that still runs stops.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, out io.Writer) error {
				voters, err := c.RemoveMember(ctx, args[0])
				if err != nil {
					return err
				}
				slices.Sort(voters)
				if f.json {
					return printJSON(out, map[string]any{"removed": args[0], "voters": voters})
				}
				_, err = fmt.Fprintf(out, "removed %s; voters %s\n", args[0], strings.Join(voters, " "))
				return err
			})
		},
	})
	members.AddCommand(remove)
	return []*cobra.Command{get, put, del, leader, members}
}

// The command-line client's default timeouts, as etcdctl's.
const (
	defaultDialTimeout    = 2 * time.Second
	defaultCommandTimeout = 5 * time.Second
)

// validate checks the timeouts (--attempt-timeout 0: the client's default).
func (f *ctlFlags) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--command-timeout", f.timeout}, {"--dial-timeout", f.dial}} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive, not %v", d.name, d.v)
		}
	}
	if f.attempt < 0 {
		return fmt.Errorf("--attempt-timeout must not be negative, not %v", f.attempt)
	}
	return nil
}

// clientConfig is the client configuration of a command against endpoints.
func (f *ctlFlags) clientConfig(endpoints []string, tlsConfig *tls.Config) client.Config {
	return client.Config{
		Endpoints: endpoints, Timeout: f.timeout, AttemptTimeout: f.attempt,
		DialTimeout: f.dial, FailWhenRefused: true, TLS: tlsConfig, Cluster: f.cluster,
	}
}

// memberInfo is what a member says of itself, for kvstore members.
type memberInfo struct {
	state   string // "ok", "recovering", "suspended", ...; "unreachable" if it did not answer in time
	version string // the version it runs; "-" if it did not answer, "?" if too old to say
}

// memberStates asks each member for its own state and version.
func (f *ctlFlags) memberStates(ctx context.Context, members []client.Member) map[string]memberInfo {
	tlsConfig, _ := f.tls.clientConfig() // checked by run already
	out := make(map[string]memberInfo, len(members))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info := memberInfo{state: "unreachable", version: "-"}
			if c, err := client.New(f.clientConfig([]string{m.Addr}, tlsConfig)); err == nil {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if st, err := c.Status(sctx); err == nil {
					info = memberInfo{state: strings.TrimPrefix(st.State, "ok,"), version: st.Build.Version}
					if info.version == "" {
						info.version = "?"
					}
				}
				cancel()
				_ = c.Close()
			}
			mu.Lock()
			out[m.ID] = info
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// argNames are the <placeholders> in a command's Use line.
func argNames(cmd *cobra.Command) []string {
	var out []string
	for _, w := range strings.Fields(cmd.Use)[1:] {
		if len(w) > 2 && w[0] == '<' {
			out = append(out, w)
		}
	}
	return out
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &exitError{exitUsage, fmt.Errorf("usage: %s", strings.TrimSuffix(cmd.UseLine(), " [flags]"))}
		}
		return nil
	}
}

func printOK(out io.Writer, asJSON bool) error {
	if asJSON {
		return printJSON(out, map[string]any{"ok": true})
	}
	_, err := fmt.Fprintln(out, "OK")
	return err
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	return enc.Encode(v)
}
