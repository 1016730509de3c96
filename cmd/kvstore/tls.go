package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kvstore/kvstore/certs"
)

// tlsFlags are --cert, --key and --ca: mutual TLS, all three or none.
type tlsFlags struct {
	cert, key, ca string
}

// add registers the flags; whose says whose certificate --cert is.
func (f *tlsFlags) add(fl *pflag.FlagSet, whose string) {
	fl.StringVar(&f.cert, "cert", "", "`FILE` with the PEM certificate of "+whose+"; mutual TLS, with --key and --ca (kvstore certs makes them)")
	fl.StringVar(&f.key, "key", "", "`FILE` with the PEM private key of --cert")
	fl.StringVar(&f.ca, "ca", "", "`FILE` with the PEM certificate of the CA that signed the nodes' and clients' certificates")
}

// files are the flags as certs.Files; a partial set is a usage error.
func (f *tlsFlags) files() (certs.Files, bool, error) {
	files := certs.Files{Cert: f.cert, Key: f.key, CA: f.ca}
	on, err := files.Enabled()
	if err != nil {
		return files, false, &exitError{exitUsage, errors.New("--cert, --key and --ca go together: give all three for TLS, or none")}
	}
	return files, on, nil
}

// clientConfig is the client's TLS configuration, nil without the flags.
func (f *tlsFlags) clientConfig() (*tls.Config, error) {
	files, on, err := f.files()
	if err != nil || !on {
		return nil, err
	}
	return files.ClientConfig()
}

// nodeConfigs are a node's server and peer TLS configurations, both nil
// without the flags.
func (f *tlsFlags) nodeConfigs() (server, peer *tls.Config, err error) {
	files, on, err := f.files()
	if err != nil || !on {
		return nil, nil, err
	}
	if server, err = files.ServerConfig(); err != nil {
		return nil, nil, err
	}
	if peer, err = files.ClientConfig(); err != nil {
		return nil, nil, err
	}
	return server, peer, nil
}

// newCertsCmd is `kvstore certs`: a CA, node and client certificates.
func newCertsCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make the CA, node and client certificates of mutual TLS",
		Long: `Makes the certificates of KVStore's mutual TLS, in PEM files in --dir:

    kvstore certs ca --dir D                              D/ca.crt, D/ca.key
    kvstore certs node --dir D --hosts 10.0.0.1,n1        D/node.crt, D/node.key
    kvstore certs client --dir D --name alice             D/client.alice.crt, D/client.alice.key

node and client sign with D/ca.crt and D/ca.key. A node runs with
--cert node.crt --key node.key --ca ca.crt, a client with its own pair and
the same ca.crt. A node certificate has CommonName "node", the role that may
call the node-to-node service; any other certificate of the CA may call the
client service only. Nodes and clients check the node certificate's names
as any TLS client does: --hosts must list every host (IP address or DNS
name, no port) that other nodes and clients dial, i.e. the host of the
node's --advertise address. One certificate may name every node's host, or
each node gets its own (--out n1: D/n1.crt, D/n1.key).

Keys are ECDSA P-256, written with mode 0600; an existing file is never
replaced. Keep ca.key away from the nodes: whoever holds it decides who is
a node.`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "directory of the CA and the files written (required; created if missing)")
	needDir := func(*cobra.Command, []string) error {
		if dir == "" {
			return &exitError{exitUsage, errors.New("--dir is required")}
		}
		return nil
	}
	loadCA := func() (*certs.CA, error) {
		return certs.LoadCA(filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile))
	}
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Make a certificate authority: ca.crt and ca.key in --dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.NewCA("KVStore CA")
			if err != nil {
				return err
			}
			c, k := filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile)
			if err := ca.Write(c, k); err != nil {
				return err
			}
			return printWritten(cmd.OutOrStdout(), c, k)
		},
	}
	var hosts []string
	var out string
	nodeCmd := &cobra.Command{
		Use:   "node",
		Short: "Make a node certificate (CN=node) for --hosts: node.crt and node.key in --dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hosts) == 0 {
				return &exitError{exitUsage, errors.New("--hosts is required: the IP addresses and DNS names others dial")}
			}
			if out == "" || filepath.Base(out) != out {
				return &exitError{exitUsage, fmt.Errorf("--out %q: want a file name without directory", out)}
			}
			ca, err := loadCA()
			if err != nil {
				return err
			}
			kp, err := ca.Node(hosts)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			c, k := filepath.Join(dir, out+".crt"), filepath.Join(dir, out+".key")
			if err := kp.Write(c, k); err != nil {
				return err
			}
			return printWritten(cmd.OutOrStdout(), c, k)
		},
	}
	nodeCmd.Flags().StringSliceVar(&hosts, "hosts", nil, "IP addresses and DNS names the certificate names: every host others dial this node at (comma list, no ports)")
	nodeCmd.Flags().StringVar(&out, "out", "node", "base name of the files written: <out>.crt and <out>.key")
	var name string
	clientCmd := &cobra.Command{
		Use:   "client",
		Short: "Make a client certificate (CN=--name): client.<name>.crt and client.<name>.key in --dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return &exitError{exitUsage, errors.New("--name is required: the user the certificate names")}
			}
			ca, err := loadCA()
			if err != nil {
				return err
			}
			kp, err := ca.Client(name)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			cf, kf := certs.ClientFiles(name)
			c, k := filepath.Join(dir, cf), filepath.Join(dir, kf)
			if err := kp.Write(c, k); err != nil {
				return err
			}
			return printWritten(cmd.OutOrStdout(), c, k)
		},
	}
	clientCmd.Flags().StringVar(&name, "name", "", "the user name, the certificate's CommonName (not \"node\")")
	for _, sub := range []*cobra.Command{ca, nodeCmd, clientCmd} {
		sub.PreRunE = needDir
		sub.SilenceUsage, sub.SilenceErrors = true, true
		cmd.AddCommand(sub)
	}
	return cmd
}

func printWritten(out io.Writer, paths ...string) error {
	for _, p := range paths {
		if _, err := fmt.Fprintln(out, "wrote", p); err != nil {
			return err
		}
	}
	return nil
}
