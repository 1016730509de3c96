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
	drops  []labDrop // in place, in the order drop added them
}

// labEtcdPort is the port of the lab's etcd (startEtcd) on hostIP.
const labEtcdPort = 2379

// labDrop is one drop: node i drops traffic to and from ip (TCP port port
// only, if not 0).
type labDrop struct {
	i    int
	ip   string
	port int
}

// newNetLab makes a lab for n nodes, or skips the test if this machine
// cannot: not root, or `ip netns` does not work. KVSTORE_REQUIRE_NETNS=1
// (set by .ci/run) turns the skip into a failure.
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("KVSTORE_REQUIRE_NETNS") == "1" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to make network namespaces (ip netns, veth, bridge, iptables)")
	}
	suffix := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	l := &netLab{t: t, prefix: "kvl-" + suffix + "-", net: freeSubnet(t), n: n}
	l.hostIP = l.net + ".1"
	sw := l.prefix + "sw"
	if out, err := exec.Command("ip", "netns", "add", sw).CombinedOutput(); err != nil {
		skip("`ip netns add` does not work here: %v: %s", err, strings.TrimSpace(string(out)))
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
func ipCmd(ctx context.Context, args ...string) error { return ipCmdIn(ctx, "", args...) }

// ipCmdIn is ipCmd with stdin as the command's standard input.
func ipCmdIn(ctx context.Context, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
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

// drop makes node i drop every packet to and from each of ips, or with
// port > 0 only TCP to and from that port of each, all at once (one
// iptables-restore: no moment with some of the rules only).
func (l *netLab) drop(ctx context.Context, i int, port int, ips ...string) error {
	rules := []string{"*filter"}
	for _, ip := range ips {
		dport, sport := "", ""
		if port > 0 {
			dport, sport = fmt.Sprint(" -p tcp --dport ", port), fmt.Sprint(" -p tcp --sport ", port)
		}
		rules = append(rules, "-A OUTPUT -d "+ip+dport+" -j DROP", "-A INPUT -s "+ip+sport+" -j DROP")
		l.drops = append(l.drops, labDrop{i, ip, port})
	}
	rules = append(rules, "COMMIT", "")
	return ipCmdIn(ctx, strings.Join(rules, "\n"), "ip", "netns", "exec", l.ns(i), "iptables-restore", "-w", "--noflush")
}

// heal removes every rule drop added, in every node's namespace.
func (l *netLab) heal(ctx context.Context) error {
	var errs []error
	for i := range l.n {
		errs = append(errs, ipCmd(ctx, "ip", "netns", "exec", l.ns(i), "iptables", "-w", "-F"))
	}
	l.drops = nil
	return errors.Join(errs...)
}

// checkDrops checks that the drops in place cut what they should and
// nothing else: from each node's namespace it connects to every other
// node's nodePort and to the host's coordPort, and reports each connection
// that was made where a drop should stop it, or not made where none
// should. Every node must be listening.
func (l *netLab) checkDrops(ctx context.Context, nodePort, coordPort int) error {
	cut := func(i int, ip string, port int) bool {
		for _, d := range l.drops {
			if d.i == i && d.ip == ip && (d.port == 0 || d.port == port) {
				return true
			}
		}
		return false
	}
	type probe struct {
		from     int
		ip       string
		port     int
		wantDrop bool
	}
	var probes []probe
	for i := range l.n {
		for j := range l.n {
			if j != i {
				probes = append(probes, probe{i, l.ip(j), nodePort, cut(i, l.ip(j), nodePort) || cut(j, l.ip(i), nodePort)})
			}
		}
		probes = append(probes, probe{i, l.hostIP, coordPort, cut(i, l.hostIP, coordPort)})
	}
	results := make(chan error, len(probes))
	for _, p := range probes {
		go func() {
			// A dropped SYN hangs: timeout ends the attempt.
			err := ipCmd(ctx, "ip", "netns", "exec", l.ns(p.from), "timeout", "2", "bash", "-c",
				fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", p.ip, p.port))
			switch {
			case p.wantDrop && err == nil:
				err = fmt.Errorf("%s reached %s:%d through a drop", l.ns(p.from), p.ip, p.port)
			case !p.wantDrop && err != nil:
				err = fmt.Errorf("%s did not reach %s:%d, with no drop: %w", l.ns(p.from), p.ip, p.port, err)
			default:
				err = nil
			}
			results <- err
		}()
	}
	var errs []error
	for range probes {
		errs = append(errs, <-results)
	}
	return errors.Join(errs...)
}

// startEtcd starts an embedded etcd for the test on the host's address on
// the bridge (port labEtcdPort; the address is the lab's own), and closes
// it when the test ends.
func (l *netLab) startEtcd() *etcdembed.Server {
	l.t.Helper()
	return startEtcdWith(l.t, func(ctx context.Context) (*etcdembed.Server, error) {
		cfg := etcdembed.DefaultMemberConfig()
		cfg.ListenClientURLs = []url.URL{{Scheme: "http", Host: fmt.Sprint(l.hostIP, ":", labEtcdPort)}}
		cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: l.hostIP + ":2380"}}
		return etcdembed.StartMember(ctx, cfg)
	})
}
