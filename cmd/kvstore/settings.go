package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvstore/kvstore/coord"
)

// settingsFlags reach the cluster's settings record in the coordinator and
// say what to change.
type settingsFlags struct {
	etcd      []string
	zookeeper string
	cluster   string
	timeout   time.Duration
	json      bool
	access    coordAccessFlags

	lease       time.Duration
	drift       float64
	maxRequests int
	finish      bool
}

// newClusterCmd is `kvstore cluster`: commands on the cluster's records in
// the coordinator. `cluster settings` shows the safety settings, `cluster
// settings set` changes them (docs/operations.md: Change a timing setting).
func newClusterCmd() *cobra.Command {
	var f settingsFlags
	coordFlags := func(cmd *cobra.Command) *cobra.Command {
		fl := cmd.Flags()
		fl.StringSliceVar(&f.etcd, "etcd", nil, "etcd endpoints (host:port,...)")
		fl.StringVar(&f.zookeeper, "zookeeper", "", "ZooKeeper ensemble, host:port[,host:port...][/chroot], instead of etcd")
		fl.StringVar(&f.cluster, "cluster", "default", "cluster name (the cluster lives under /kvstore/<name> in the coordinator)")
		fl.DurationVar(&f.timeout, "timeout", 20*time.Second, "how long the command may take")
		fl.BoolVar(&f.json, "json", false, "print the settings as JSON")
		f.access.add(fl)
		cmd.Args = exactArgs(0)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		cmd.PreRunE = func(cmd *cobra.Command, _ []string) error { return bindEnv(cmd) }
		documentEnv(cmd)
		return cmd
	}
	run := func(cmd *cobra.Command, do func(ctx context.Context, co coord.Coordinator, out io.Writer) error) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
		defer cancel()
		co, err := openCoordinator(ctx, f.etcd, f.zookeeper, f.cluster, f.access, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer co.Close()
		return do(ctx, co, cmd.OutOrStdout())
	}
	show := coordFlags(&cobra.Command{
		Use:   "settings",
		Short: "Show the cluster's safety settings (lease, clock drift margin, request-id window, max lease)",
		Long: `Shows the settings every node of the cluster must run with, as recorded in the
coordinator by the first node: --lease, --clock-drift and --max-requests of
kvstore node, and max-lease, the longest lease a node of the cluster may
still grant (longer than the lease only while a change of --lease is rolled
out). A node started with another value refuses to start.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, func(ctx context.Context, co coord.Coordinator, out io.Writer) error {
				s, err := co.Settings(ctx)
				if err != nil {
					return err
				}
				if s.Version == 0 {
					return fmt.Errorf("cluster %q has no settings recorded: the first node records its own", f.cluster)
				}
				return printSettings(out, s, f.json)
			})
		},
	})
	set := coordFlags(&cobra.Command{
		Use:   "set",
		Short: "Change the cluster's safety settings (see docs/operations.md: Change a timing setting)",
		Long: `Changes the settings every node must run with. The procedure (docs/operations.md: Change a
timing setting):

 1. kvstore cluster settings set --lease D [--clock-drift F]
    records the new values, and max-lease = the longest of the old and the
    new lease, so that while nodes started with the old lease still run,
    every new leader waits out the longest lease any of them may have granted.
 2. Restart the nodes one at a time with the new flags (a node started with
    the old values is now refused).
 3. kvstore cluster settings set --finish
    once every node runs with the new values: max-lease drops to the lease.

--max-requests (the request-id window) changes only while no node runs:
replicas whose windows differ deduplicate a late retry differently and
diverge. Stop every node, set it, start them with the new flag.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch := settingsChange{finish: f.finish}
			fl := cmd.Flags()
			if fl.Changed("lease") {
				ch.lease = &f.lease
			}
			if fl.Changed("clock-drift") {
				ch.drift = &f.drift
			}
			if fl.Changed("max-requests") {
				ch.maxRequests = &f.maxRequests
			}
			if err := ch.validate(); err != nil {
				return &exitError{exitUsage, err}
			}
			return run(cmd, func(ctx context.Context, co coord.Coordinator, out io.Writer) error {
				s, err := changeSettings(ctx, co, ch)
				if err != nil {
					return err
				}
				return printSettings(out, s, f.json)
			})
		},
	})
	sfl := set.Flags()
	sfl.DurationVar(&f.lease, "lease", 0, "the new read lease (kvstore node --lease)")
	sfl.Float64Var(&f.drift, "clock-drift", 0, "the new clock drift margin (kvstore node --clock-drift)")
	sfl.IntVar(&f.maxRequests, "max-requests", 0, "the new request-id window (kvstore node --max-requests); only while no node runs")
	sfl.BoolVar(&f.finish, "finish", false, "every node runs with the current lease now: lower max-lease to it")
	show.AddCommand(set)
	cluster := &cobra.Command{
		Use:   "cluster",
		Short: "Show or change the cluster's records in the coordinator (settings)",
		Args:  exactArgs(0),
	}
	cluster.AddCommand(show)
	return cluster
}

// settingsChange is what `cluster settings set` changes: nil fields stay.
type settingsChange struct {
	lease       *time.Duration
	drift       *float64
	maxRequests *int
	finish      bool
}

// validate names the first bad flag; its errors are usage errors.
func (ch settingsChange) validate() error {
	switch {
	case ch.finish && (ch.lease != nil || ch.drift != nil || ch.maxRequests != nil):
		return errors.New("--finish goes alone: it ends a change made before")
	case !ch.finish && ch.lease == nil && ch.drift == nil && ch.maxRequests == nil:
		return errors.New("nothing to change: give --lease, --clock-drift, --max-requests or --finish")
	case ch.lease != nil && *ch.lease <= 0:
		return fmt.Errorf("--lease %v: must be positive", *ch.lease)
	case ch.drift != nil && (*ch.drift < 0 || *ch.drift >= 1):
		return fmt.Errorf("--clock-drift %v: must be in [0, 1)", *ch.drift)
	case ch.maxRequests != nil && *ch.maxRequests <= 0:
		return fmt.Errorf("--max-requests %d: must be positive", *ch.maxRequests)
	}
	return nil
}

// apply returns the settings cur becomes. A new lease keeps MaxLease at
// least the old lease: nodes started before the change still grant it.
func (ch settingsChange) apply(cur coord.Settings) coord.Settings {
	next := cur
	if ch.lease != nil {
		next.LeaseDuration = *ch.lease
		next.MaxLease = max(cur.MaxLease, cur.LeaseDuration, *ch.lease)
	}
	if ch.drift != nil {
		next.ClockDrift = *ch.drift
	}
	if ch.maxRequests != nil {
		next.MaxRequests = *ch.maxRequests
	}
	if ch.finish {
		next.MaxLease = cur.LeaseDuration
	}
	return next
}

// changeSettings applies ch to the recorded settings with a
// compare-and-swap and returns the new record. A change of the request-id
// window is refused while any node is a live member.
func changeSettings(ctx context.Context, co coord.Coordinator, ch settingsChange) (coord.Settings, error) {
	cur, err := co.Settings(ctx)
	if err != nil {
		return coord.Settings{}, err
	}
	if cur.Version == 0 {
		return coord.Settings{}, errors.New("no settings recorded: the first node records its own (start it with the values you want)")
	}
	next := ch.apply(cur)
	if next.MaxRequests != cur.MaxRequests {
		live, err := liveMembers(ctx, co)
		if err != nil {
			return coord.Settings{}, err
		}
		if len(live) > 0 {
			return coord.Settings{}, fmt.Errorf("--max-requests changes only while no node runs (replicas with different request-id windows diverge), but %s are live: stop every node first", strings.Join(live, ", "))
		}
	}
	if err := co.SetSettings(ctx, cur, next); err != nil {
		if errors.Is(err, coord.ErrConflict) {
			return coord.Settings{}, fmt.Errorf("the settings changed while this command ran; run it again: %w", err)
		}
		return coord.Settings{}, err
	}
	return co.Settings(ctx)
}

// liveMembers lists the ids of the nodes with a live membership entry, as a
// short session of this command sees them.
func liveMembers(ctx context.Context, co coord.Coordinator) ([]string, error) {
	sess, err := co.NewSession(ctx, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("list live members: %w", err)
	}
	defer func() {
		// Closing deletes the session's entries; bounded, so that a
		// coordinator that went away cannot hang the command.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = sess.Close(cctx)
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case v, ok := <-sess.Watch(wctx):
		if !ok {
			return nil, fmt.Errorf("list live members: the watch ended: %w", ctx.Err())
		}
		var ids []string
		for id := range v.Members {
			ids = append(ids, id)
		}
		return ids, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("list live members: %w", ctx.Err())
	}
}

func printSettings(out io.Writer, s coord.Settings, asJSON bool) error {
	if asJSON {
		return printJSON(out, map[string]any{
			"lease": s.LeaseDuration.String(), "clock_drift": s.ClockDrift,
			"max_requests": s.MaxRequests, "max_lease": s.MaxLease.String(),
		})
	}
	_, err := fmt.Fprintln(out, s)
	return err
}
