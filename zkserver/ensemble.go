package zkserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// startAttempts bounds how often StartEnsemble retries when a port it
	// picked was taken by someone else between picking and binding.
	startAttempts = 5
	// pollInterval is how often readiness is probed.
	pollInterval = 50 * time.Millisecond
	// probeTimeout bounds one four-letter-word exchange while polling, so a
	// hung JVM cannot stall a poll loop past its context.
	probeTimeout = 2 * time.Second
	// stopGrace is how long Close waits after SIGTERM before SIGKILL.
	stopGrace = 3 * time.Second
	// logTailBytes is how much of a server's log errors quote.
	logTailBytes = 4 << 10
)

// Ensemble is a running set of ZooKeeper servers: one standalone server, or
// an ensemble whose members form a quorum. Its methods are safe for
// concurrent use. Servers are numbered by index 0..Size()-1 (ZooKeeper's myid
// is index+1). Close it when done.
type Ensemble struct {
	cfg       Config
	java      string
	dir       string
	removeDir bool      // Start created dir, so Close removes it
	members   []*member // fixed by Start

	mu     sync.Mutex // guards closed and every member's proc
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// member is one server of an Ensemble. All but proc are fixed by Start.
type member struct {
	index        int
	dir          string // holds zoo.cfg, the log file and data/
	cfgPath      string
	logPath      string
	clientPort   int
	peerPort     int
	electionPort int
	securePort   int      // the TLS client port; 0 without Config.TLS
	proc         *process // nil while stopped; guarded by Ensemble.mu
}

func (m *member) myid() int    { return m.index + 1 }
func (m *member) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.clientPort)) }

// process is one run of a server's JVM.
type process struct {
	cmd      *exec.Cmd
	logStart int64         // size of the log file when this run began
	done     chan struct{} // closed when the JVM has exited and was reaped
	err      error         // cmd.Wait's result; read only after done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start starts one standalone ZooKeeper server: StartEnsemble with n = 1.
func Start(ctx context.Context, cfg Config) (*Ensemble, error) {
	return StartEnsemble(ctx, cfg, 1)
}

// StartEnsemble starts n ZooKeeper servers on free loopback ports (one
// standalone server if n is 1, else an ensemble with a quorum of n/2+1) and
// waits, bounded by ctx, until every one serves: it answers "ruok" with
// "imok" and "srvr" reports mode standalone, leader or follower, with one
// leader. The JVMs start concurrently. On error nothing it started is left
// running and a temporary directory it created is removed.
func StartEnsemble(ctx context.Context, cfg Config, n int) (*Ensemble, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("zkserver: ensemble size must be at least 1, got %d", n)
	}
	java, err := javaPath()
	if err != nil {
		return nil, err
	}
	if cfg.TLS.Enabled() {
		if _, err := os.Stat(NettyCodecJar); err != nil {
			return nil, fmt.Errorf("zkserver: TLS needs %s (Debian package libnetty-java): %w", NettyCodecJar, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("zkserver: start: %w", err)
	}
	// Absolute paths keep zoo.cfg and the log4j URL independent of the
	// JVM's working directory.
	dir, removeDir := cfg.Dir, false
	if dir == "" {
		tmp, err := filepath.Abs(os.TempDir())
		if err != nil {
			return nil, fmt.Errorf("zkserver: temp dir: %w", err)
		}
		if dir, err = os.MkdirTemp(tmp, "zkserver-*"); err != nil {
			return nil, fmt.Errorf("zkserver: create dir: %w", err)
		}
		removeDir = true
	} else {
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("zkserver: dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("zkserver: create dir: %w", err)
		}
	}

	for attempt := 1; attempt <= startAttempts; attempt++ {
		var e *Ensemble
		var ports []int
		if ports, err = freePorts(portsPerServer(cfg) * n); err != nil {
			err = fmt.Errorf("zkserver: pick ports: %w", err)
			break
		}
		e, err = startOnce(ctx, cfg, java, dir, ports)
		if err == nil {
			e.removeDir = removeDir
			return e, nil
		}
		var xe *exitedError
		if !errors.As(err, &xe) || !xe.portTaken || ctx.Err() != nil {
			break
		}
	}
	if removeDir {
		_ = os.RemoveAll(dir)
	}
	return nil, err
}

// portsPerServer is 3 (client, peer, election), 4 with a TLS client port.
func portsPerServer(cfg Config) int {
	if cfg.TLS.Enabled() {
		return 4
	}
	return 3
}

// startOnce makes one attempt to start len(ports)/k servers in dir, k =
// portsPerServer(cfg); server i gets ports[ki:ki+k] as client, peer,
// election and, with TLS, secure client port. On error it has stopped
// whatever it started.
func startOnce(ctx context.Context, cfg Config, java, dir string, ports []int) (*Ensemble, error) {
	k := portsPerServer(cfg)
	n := len(ports) / k
	e := &Ensemble{cfg: cfg, java: java, dir: dir, members: make([]*member, n)}
	for i := range e.members {
		d := filepath.Join(dir, "zk"+strconv.Itoa(i+1))
		e.members[i] = &member{
			index:        i,
			dir:          d,
			cfgPath:      filepath.Join(d, "zoo.cfg"),
			logPath:      filepath.Join(d, "zookeeper.log"),
			clientPort:   ports[k*i],
			peerPort:     ports[k*i+1],
			electionPort: ports[k*i+2],
		}
		if cfg.TLS.Enabled() {
			e.members[i].securePort = ports[k*i+3]
		}
	}
	if err := e.writeFiles(); err != nil {
		return nil, err
	}

	e.mu.Lock()
	for _, m := range e.members {
		if err := e.spawn(m); err != nil {
			e.mu.Unlock()
			e.kill()
			return nil, err
		}
	}
	e.mu.Unlock()

	if err := e.WaitServing(ctx); err != nil {
		var xe *exitedError
		if !errors.As(err, &xe) { // an exited server's error quotes its log already
			for _, m := range e.members {
				err = fmt.Errorf("%w\nend of %s:\n%s", err, m.logPath, logTail(m.logPath, logTailBytes/2))
			}
		}
		e.kill()
		return nil, fmt.Errorf("zkserver: start: %w", err)
	}
	return e, nil
}

// log4jProperties sends ZooKeeper's log to stdout, which goes to the log file.
const log4jProperties = `# Written by zkserver: ZooKeeper logs to stdout, captured in zookeeper.log.
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.Target=System.out
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] %-5p [%t] %c{1}: %m%n
`

// writeFiles writes the log4j configuration and each member's zoo.cfg and
// myid, creating the member directories.
func (e *Ensemble) writeFiles() error {
	if err := os.WriteFile(e.log4jPath(), []byte(log4jProperties), 0o644); err != nil {
		return fmt.Errorf("zkserver: write log config: %w", err)
	}
	minTimeout, maxTimeout := e.cfg.SessionTimeouts()
	if e.cfg.TLS.Enabled() {
		if err := e.writeKeyStore(); err != nil {
			return err
		}
	}
	for _, m := range e.members {
		data := filepath.Join(m.dir, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return fmt.Errorf("zkserver: create data dir: %w", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "# Written by zkserver for server %d.\n", m.myid())
		fmt.Fprintf(&b, "tickTime=%d\n", e.cfg.TickTime.Milliseconds())
		fmt.Fprintf(&b, "initLimit=%d\n", e.cfg.InitLimit)
		fmt.Fprintf(&b, "syncLimit=%d\n", e.cfg.SyncLimit)
		fmt.Fprintf(&b, "minSessionTimeout=%d\n", minTimeout.Milliseconds())
		fmt.Fprintf(&b, "maxSessionTimeout=%d\n", maxTimeout.Milliseconds())
		fmt.Fprintf(&b, "dataDir=%s\n", propertyValue(data))
		fmt.Fprintf(&b, "clientPortAddress=127.0.0.1\n")
		fmt.Fprintf(&b, "clientPort=%d\n", m.clientPort)
		b.WriteString("maxClientCnxns=0\n") // no per-IP limit: every test client is 127.0.0.1
		b.WriteString("4lw.commands.whitelist=*\n")
		b.WriteString("admin.enableServer=false\n")
		if e.cfg.TLS.Enabled() {
			fmt.Fprintf(&b, "secureClientPortAddress=127.0.0.1\n")
			fmt.Fprintf(&b, "secureClientPort=%d\n", m.securePort)
			b.WriteString("serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n")
			fmt.Fprintf(&b, "ssl.keyStore.location=%s\n", propertyValue(e.keyStorePath()))
			b.WriteString("ssl.keyStore.type=PEM\n")
			fmt.Fprintf(&b, "ssl.trustStore.location=%s\n", propertyValue(e.cfg.TLS.CAFile))
			b.WriteString("ssl.trustStore.type=PEM\n")
			b.WriteString("ssl.clientAuth=need\n")
		}
		if len(e.members) > 1 {
			for _, o := range e.members {
				fmt.Fprintf(&b, "server.%d=127.0.0.1:%d:%d\n", o.myid(), o.peerPort, o.electionPort)
			}
			myid := strconv.Itoa(m.myid()) + "\n"
			if err := os.WriteFile(filepath.Join(data, "myid"), []byte(myid), 0o644); err != nil {
				return fmt.Errorf("zkserver: write myid: %w", err)
			}
		}
		if err := os.WriteFile(m.cfgPath, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("zkserver: write zoo.cfg: %w", err)
		}
	}
	return nil
}

func (e *Ensemble) log4jPath() string { return filepath.Join(e.dir, "log4j.properties") }

// keyStorePath is the servers' PEM key store: ZooKeeper wants the private
// key and the certificate in one file.
func (e *Ensemble) keyStorePath() string { return filepath.Join(e.dir, "keystore.pem") }

// writeKeyStore writes Config.TLS's key and certificate into keyStorePath.
func (e *Ensemble) writeKeyStore() error {
	key, err := os.ReadFile(e.cfg.TLS.KeyFile)
	if err != nil {
		return fmt.Errorf("zkserver: TLS key: %w", err)
	}
	cert, err := os.ReadFile(e.cfg.TLS.CertFile)
	if err != nil {
		return fmt.Errorf("zkserver: TLS certificate: %w", err)
	}
	pem := append(append(key, '\n'), cert...)
	if err := os.WriteFile(e.keyStorePath(), pem, 0o600); err != nil {
		return fmt.Errorf("zkserver: write key store: %w", err)
	}
	return nil
}

// propertyValue escapes s for a Java properties file.
func propertyValue(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }

// javaArgs returns the arguments of member m's java command line.
func (e *Ensemble) javaArgs(m *member) []string {
	forceSync := "yes"
	if !e.cfg.ForceSync {
		forceSync = "no"
	}
	log4jURL := url.URL{Scheme: "file", Path: e.log4jPath()}
	classpath := Classpath
	if e.cfg.TLS.Enabled() {
		classpath += ":" + NettyCodecJar
	}
	return []string{
		"-Xmx" + strconv.Itoa(e.cfg.MaxHeapMB) + "m",
		"-XX:+UseSerialGC", // small heaps; fewer GC threads per JVM
		"-XX:-UsePerfData", // no hsperfdata files in /tmp
		"-Djava.net.preferIPv4Stack=true",
		"-Dzookeeper.jmx.log4j.disable=true",
		"-Dzookeeper.forceSync=" + forceSync,
		"-Dlog4j.configuration=" + log4jURL.String(),
		"-cp", classpath,
		MainClass, m.cfgPath,
	}
}

// spawn starts member m's JVM. The caller holds e.mu and m is stopped.
func (e *Ensemble) spawn(m *member) error {
	logf, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("zkserver: open log of server %d: %w", m.index, err)
	}
	var logStart int64
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(e.java, e.javaArgs(m)...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = logf, logf // the child gets the file itself: no copying goroutine
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	_ = logf.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("zkserver: start server %d: %w", m.index, err)
	}
	p := &process{cmd: cmd, logStart: logStart, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	m.proc = p
	return nil
}

// kill SIGKILLs every running member and waits for them; for failed starts.
func (e *Ensemble) kill() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.members {
		if p := m.proc; p != nil {
			_ = p.cmd.Process.Kill()
			<-p.done
			m.proc = nil
		}
	}
}

// Size returns the number of servers, running or not.
func (e *Ensemble) Size() int { return len(e.members) }

// Servers returns every server's client address, "127.0.0.1:port", by index.
// A stopped server keeps its address.
func (e *Ensemble) Servers() []string {
	addrs := make([]string, len(e.members))
	for i, m := range e.members {
		addrs[i] = m.addr()
	}
	return addrs
}

// SecureServers returns every server's TLS client address,
// "127.0.0.1:port", by index; nil without Config.TLS.
func (e *Ensemble) SecureServers() []string {
	if !e.cfg.TLS.Enabled() {
		return nil
	}
	addrs := make([]string, len(e.members))
	for i, m := range e.members {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(m.securePort))
	}
	return addrs
}

// Dir returns the directory holding the servers' configurations, data and
// logs: server i uses Dir()/zk<i+1>.
func (e *Ensemble) Dir() string { return e.dir }

// LogFile returns the file that receives server i's stdout and stderr, which
// carry ZooKeeper's log. Restarts append to it. It is gone after Close if
// Dir was temporary.
func (e *Ensemble) LogFile(i int) string {
	if i < 0 || i >= len(e.members) {
		return ""
	}
	return e.members[i].logPath
}

// Running reports whether server i was started and not stopped, and its JVM
// has not exited.
func (e *Ensemble) Running(i int) bool {
	m, err := e.member(i)
	if err != nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.proc != nil && !m.proc.exited()
}

func (e *Ensemble) member(i int) (*member, error) {
	if i < 0 || i >= len(e.members) {
		return nil, fmt.Errorf("zkserver: no server %d in an ensemble of %d", i, len(e.members))
	}
	return e.members[i], nil
}

// Stop kills server i with SIGKILL, as a crash would, and waits for the JVM
// to exit. Its data directory and ports are kept for Restart. Stopping a
// stopped server does nothing.
func (e *Ensemble) Stop(i int) error {
	m, err := e.member(i)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if p := m.proc; p != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		m.proc = nil
	}
	return nil
}

// Restart starts server i again, on the same ports and data directory, and
// waits, bounded by ctx, until its JVM answers "ruok". If it is running it is
// first killed as by Stop. Restart does not wait for the server to rejoin
// the quorum (it cannot while too few others run): call WaitServing for
// that. On error the server is left stopped.
func (e *Ensemble) Restart(ctx context.Context, i int) error {
	m, err := e.member(i)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if p := m.proc; p != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		m.proc = nil
	}
	if err := e.spawn(m); err != nil {
		e.mu.Unlock()
		return err
	}
	p := m.proc
	e.mu.Unlock()

	err = poll(ctx, fmt.Sprintf("server %d to answer ruok", i), func(ctx context.Context) (bool, error) {
		_, fatal, err := e.probeRunning(ctx, m, p, false)
		return fatal, err
	})
	if err == nil {
		return nil
	}
	e.mu.Lock()
	if m.proc == p {
		_ = p.cmd.Process.Kill()
		<-p.done
		m.proc = nil
	}
	e.mu.Unlock()
	return fmt.Errorf("zkserver: restart: %w", err)
}

// WaitServing waits, bounded by ctx, until every running server serves
// clients: it answers "ruok" with "imok" and "srvr" reports mode
// standalone, leader or follower, and exactly one running server leads. It
// fails at once if a running server's JVM exited, or if too few servers run
// to form a quorum.
func (e *Ensemble) WaitServing(ctx context.Context) error {
	return poll(ctx, "ZooKeeper to serve", e.checkServing)
}

// checkServing makes one readiness check of every running member.
func (e *Ensemble) checkServing(ctx context.Context) (fatal bool, err error) {
	type running struct {
		m *member
		p *process
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return true, ErrClosed
	}
	var rs []running
	for _, m := range e.members {
		if m.proc != nil {
			rs = append(rs, running{m, m.proc})
		}
	}
	e.mu.Unlock()

	n := len(e.members)
	if quorum := n/2 + 1; len(rs) < quorum {
		return true, fmt.Errorf("zkserver: only %d of %d servers running, fewer than a quorum of %d", len(rs), n, quorum)
	}
	leaders := 0
	for _, r := range rs {
		mode, fatal, err := e.probeRunning(ctx, r.m, r.p, true)
		if fatal {
			return true, err
		}
		if err != nil {
			return false, fmt.Errorf("server %d: %w", r.m.index, err)
		}
		switch mode {
		case "leader":
			leaders++
		case "standalone", "follower", "observer":
		default:
			return false, fmt.Errorf("server %d: mode %q", r.m.index, mode)
		}
	}
	if n > 1 && leaders != 1 {
		return false, fmt.Errorf("%d running servers report mode leader", leaders)
	}
	return false, nil
}

// Mode returns server i's mode as "srvr" reports it: "standalone",
// "leader", "follower" or "observer". It fails if the server does not serve.
func (e *Ensemble) Mode(ctx context.Context, i int) (string, error) {
	m, err := e.member(i)
	if err != nil {
		return "", err
	}
	return probe(ctx, m.addr(), true)
}

// Leader returns the index of the running server that reports mode leader
// (0 for a standalone server), or an error if none does.
func (e *Ensemble) Leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range e.members {
		if !e.Running(i) {
			continue
		}
		mode, err := e.Mode(ctx, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %d: %w", i, err))
			continue
		}
		if mode == "leader" || mode == "standalone" {
			return i, nil
		}
	}
	return -1, fmt.Errorf("zkserver: no leader: %w", errors.Join(errs...))
}

// Close stops every server and waits for the JVMs to exit: SIGTERM first,
// SIGKILL for any still running after a short grace period. Then it removes
// the directory if Start created it. Close is idempotent: later calls return
// the first call's result.
func (e *Ensemble) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		var procs []*process
		for _, m := range e.members {
			if m.proc != nil {
				procs = append(procs, m.proc)
				m.proc = nil
			}
		}
		e.mu.Unlock()

		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
		grace := time.NewTimer(stopGrace)
		defer grace.Stop()
		killed := false
		for _, p := range procs {
			if !killed {
				select {
				case <-p.done:
					continue
				case <-grace.C:
					for _, q := range procs {
						_ = q.cmd.Process.Kill()
					}
					killed = true
				}
			}
			<-p.done
		}

		if e.removeDir {
			if err := os.RemoveAll(e.dir); err != nil {
				e.closeErr = fmt.Errorf("zkserver: remove dir: %w", err)
			}
		}
	})
	return e.closeErr
}

// poll calls check every pollInterval until it reports success (a nil
// error) or a fatal error, or ctx is done. what names the awaited state in
// the error.
func poll(ctx context.Context, what string, check func(context.Context) (fatal bool, err error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		fatal, err := check(ctx)
		if err == nil {
			return nil
		}
		if fatal {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("zkserver: waiting for %s: %w (last check: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// probeRunning probes member m, whose JVM is p, as probe does. If the JVM
// has exited, or exits during the probe, it returns an *exitedError and
// fatal set.
func (e *Ensemble) probeRunning(ctx context.Context, m *member, p *process, mode bool) (_ string, fatal bool, _ error) {
	if p.exited() {
		return "", true, e.exitedError(m, p)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done: // don't wait for a reply from a dead server
			cancel()
		case <-ctx.Done():
		}
	}()
	s, err := probe(ctx, m.addr(), mode)
	if err != nil && p.exited() {
		return "", true, e.exitedError(m, p)
	}
	return s, false, err
}

// probe asks the server at addr "ruok" and, if mode is set, "srvr", and
// returns the mode srvr reports. Each exchange is bounded by ctx and by
// probeTimeout.
func probe(ctx context.Context, addr string, mode bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := FourLetterWord(ctx, addr, "ruok")
	if err != nil {
		return "", err
	}
	if resp != "imok" {
		return "", fmt.Errorf("zkserver: ruok answered %q, want imok", resp)
	}
	if !mode {
		return "", nil
	}
	resp, err = FourLetterWord(ctx, addr, "srvr")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(resp) {
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(m), nil
		}
	}
	return "", fmt.Errorf("zkserver: not serving: srvr answered %q", strings.TrimSpace(resp))
}

// exitedError is the error for a server whose JVM exited on its own.
type exitedError struct {
	index     int
	err       error  // from cmd.Wait
	log       string // path of its log file
	tail      string // the end of its log file
	portTaken bool   // it exited because a port it was to bind was taken
}

// exitCodeQuorumPortBind is the exit code of ZooKeeper 3.8 when it cannot
// bind its election port (ExitCode.UNABLE_TO_BIND_QUORUM_PORT).
const exitCodeQuorumPortBind = 14

func (e *Ensemble) exitedError(m *member, p *process) *exitedError {
	var exit *exec.ExitError
	taken := errors.As(p.err, &exit) && exit.ExitCode() == exitCodeQuorumPortBind
	return &exitedError{
		index:     m.index,
		err:       p.err,
		log:       m.logPath,
		tail:      logTail(m.logPath, logTailBytes),
		portTaken: taken || logContains(m.logPath, p.logStart, "java.net.BindException"),
	}
}

func (x *exitedError) Error() string {
	return fmt.Sprintf("zkserver: server %d exited (%v); end of %s:\n%s", x.index, x.err, x.log, x.tail)
}

func (x *exitedError) Unwrap() error { return x.err }

// logContains reports whether the file at path contains s after offset off,
// looking at no more than a few MiB.
func logContains(path string, off int64, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, off, 4<<20))
	return err == nil && strings.Contains(string(b), s)
}

// logTail returns about the last size bytes of the file at path, starting
// at a line boundary, or a note saying why it cannot.
func logTail(path string, size int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := max(fi.Size()-size, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if n == 0 && err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	s := string(buf[:n])
	if off > 0 {
		if _, rest, ok := strings.Cut(s, "\n"); ok {
			s = rest
		}
	}
	return s
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. Another process may take one before ZooKeeper binds it;
// StartEnsemble retries then.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Keep it open until all are picked so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
