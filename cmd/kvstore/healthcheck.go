package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheckCmd is `kvstore healthcheck <url>`: a container's
// HEALTHCHECK in an image with nothing but this binary (no curl, no shell).
func newHealthcheckCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck <url>",
		Short: "GET a health URL and exit 0 only on HTTP 200 (for container healthchecks)",
		Long: `healthcheck GETs the URL and exits 0 if it answers 200 OK, 1 otherwise
(another status, no answer within --timeout, a refused connection). It is
for a container's healthcheck, where the image holds only this binary:

    kvstore healthcheck http://127.0.0.1:9100/readyz   # a node (--metrics-listen)
    kvstore healthcheck http://127.0.0.1:2379/health   # a coordinator (etcd)

A node's /readyz answers 200 only while it serves and sees a leader;
/healthz answers 200 while the process runs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return healthcheck(cmd.Context(), args[0], timeout, cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the answer")
	return cmd
}

// healthcheck GETs url within timeout and fails unless it answers 200.
func healthcheck(ctx context.Context, url string, timeout time.Duration, out io.Writer) error {
	if timeout <= 0 {
		return &exitError{exitUsage, fmt.Errorf("healthcheck: --timeout %v must be positive", timeout)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	_, err = fmt.Fprintf(out, "%s: %s\n", url, resp.Status)
	return err
}
