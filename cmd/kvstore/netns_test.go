package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/etcdembed"
)

// netLab is a private network of Linux network namespaces on this machine,
// for node processes that a test cuts off from each other with iptables:
//
//   - a switch namespace holding a Linux bridge (in a namespace of its own,
//     so that the host's firewall, which may drop bridged traffic, never
//     sees it);
//   - the host, that is the test process with its coordinator and clients,
//     on the bridge through a veth with the address hostIP;
//   - one namespace a node, on the bridge through a veth, with the address
//     ip(i).
//
// Everything is on one private /24 picked at random, without a default
// route: nothing is routed off the machine. Names carry a random suffix,
// so that test runs in parallel do not clash, and everything is removed
// when the test ends, failed or not.
type netLab struct {
	t      *testing.T
	prefix string // of the namespaces' names: kvl-<suffix>-
	net    string // the /24's first three octets, "10.a.b"
	hostIP string
	n      int
}

// newNetLab makes a lab for n nodes, or skips the test if this machine
// cannot: not root, or `ip netns` does not work.
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to make network namespaces (ip netns, veth, bridge, iptables)")
	}
	suffix := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	l := &netLab{t: t, prefix: "kvl-" + suffix + "-", net: freeSubnet(t), n: n}
	l.hostIP = l.net + ".1"
	sw := l.prefix + "sw"
	if out, err := exec.Command("ip", "netns", "add", sw).CombinedOutput(); err != nil {
		t.Skipf("skipped: `ip netns add` does not work here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	l.cleanup(sw)
	hostVeth := "kvl" + suffix // the only name in the host's namespace
	l.sh("ip", "-n", sw, "link", "set", "lo", "up")
	l.sh("ip", "-n", sw, "link", "add", "name", "br0", "type", "bridge")
	l.sh("ip", "-n", sw, "link", "set", "br0", "up")
	// The host's end stays in the host's namespace; deleting the switch
	// namespace deletes the pair.
	l.sh("ip", "link", "add", hostVeth, "type", "veth", "peer", "name", "host", "netns", sw)
	l.sh("ip", "addr", "add", l.hostIP+"/24", "dev", hostVeth)
	l.sh("ip", "link", "set", hostVeth, "up")
	l.sh("ip", "-n", sw, "link", "set", "host", "master", "br0", "up")
	for i := range n {
		ns := l.ns(i)
		l.sh("ip", "netns", "add", ns)
		l.cleanup(ns)
		l.sh("ip", "-n", ns, "link", "set", "lo", "up")
		port := fmt.Sprintf("n%d", i)
		l.sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", sw)
		l.sh("ip", "-n", ns, "addr", "add", l.ip(i)+"/24", "dev", "eth0")
		l.sh("ip", "-n", ns, "link", "set", "eth0", "up")
		l.sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
	}
	return l
}

// freeSubnet picks a private /24 under 10.0.0.0/8 that no address of the
// host's namespace is in, and returns its first three octets.
func freeSubnet(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		cand := fmt.Sprintf("10.%d.%d", 200+rand.IntN(50), rand.IntN(256))
		_, sub, _ := net.ParseCIDR(cand + ".0/24")
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (sub.Contains(ipn.IP) || ipn.Contains(sub.IP)) {
				used = true
			}
		}
		if !used {
			return cand
		}
	}
	t.Fatalf("no free /24 under 10.200.0.0/13 among the host's addresses %v", addrs)
	return ""
}

// cleanup deletes namespace ns when the test ends (with it, its veths).
func (l *netLab) cleanup(ns string) {
	l.t.Cleanup(func() {
		if err := ipCmd(context.Background(), "ip", "netns", "del", ns); err != nil {
			l.t.Errorf("removing the lab: %v", err)
		}
	})
}

// ns is node i's namespace, ip(i) its address.
func (l *netLab) ns(i int) string { return fmt.Sprint(l.prefix, "n", i) }
func (l *netLab) ip(i int) string { return fmt.Sprint(l.net, ".", 10+i) }

// ipCmd runs a network command (ip, iptables), bounded by 10 s and ctx.
func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sh runs a network command, failing the test if it fails.
func (l *netLab) sh(args ...string) {
	l.t.Helper()
	if err := ipCmd(context.Background(), args...); err != nil {
		l.t.Fatal(err)
	}
}

// command is argv run in node i's namespace (ip netns exec execs it: the
// process is argv's).
func (l *netLab) command(i int, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.ns(i)}, argv...)...)
}

// drop makes node i drop every packet to and from ip, or with port > 0 only
// TCP to and from that port of ip.
func (l *netLab) drop(ctx context.Context, i int, ip string, port int) error {
	match := func(dir, portDir string) []string {
		m := []string{dir, ip}
		if port > 0 {
			m = append(m, "-p", "tcp", portDir, fmt.Sprint(port))
		}
		return append(m, "-j", "DROP")
	}
	base := []string{"ip", "netns", "exec", l.ns(i), "iptables", "-w"}
	return errors.Join(
		ipCmd(ctx, append(append(base, "-A", "OUTPUT"), match("-d", "--dport")...)...),
		ipCmd(ctx, append(append(base, "-A", "INPUT"), match("-s", "--sport")...)...))
}

// heal removes every rule drop added, in every node's namespace.
func (l *netLab) heal(ctx context.Context) error {
	var errs []error
	for i := range l.n {
		errs = append(errs, ipCmd(ctx, "ip", "netns", "exec", l.ns(i), "iptables", "-w", "-F"))
	}
	return errors.Join(errs...)
}

// startEtcd starts an embedded etcd for the test on the host's address on
// the bridge (port 2379; the address is the lab's own), and closes it when
// the test ends.
func (l *netLab) startEtcd() *etcdembed.Server {
	l.t.Helper()
	return startEtcdWith(l.t, func(ctx context.Context) (*etcdembed.Server, error) {
		cfg := etcdembed.DefaultMemberConfig()
		cfg.ListenClientURLs = []url.URL{{Scheme: "http", Host: l.hostIP + ":2379"}}
		cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: l.hostIP + ":2380"}}
		return etcdembed.StartMember(ctx, cfg)
	})
}
