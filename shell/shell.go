// Package shell is KVStore's interactive shell, kept command for command
// from the original system: get, put, delete, list, new-client, rmi-down,
// rmi-up, zk-down, zk-up, kill, restart, leader, help, quit, and remove
// (a voter), which the original lacked.
//
// Run reads commands from Config.In until quit, exit, end of input, or the
// context ends. Results go to Config.Out; every error is one line starting
// "error: " on Config.Err, and the shell goes on. In interactive mode
// (a terminal) it shows a prompt and offers line editing and history.
//
// Ctrl-C: at an interactive prompt the line editor reads it and clears the
// line, as readline shells do. A SIGINT delivered on Config.Interrupt while
// a command runs cancels that command (it fails with "interrupted" and the
// shell goes on); one delivered at the prompt ends the shell as quit does.
// The kvstore command delivers SIGINT there only on a terminal; otherwise
// SIGINT, like SIGTERM, ends the context and so the shell.
package shell

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/peterh/liner"
	"golang.org/x/term"
)

// Config configures Run.
type Config struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
	// Interactive shows a banner and prompt and uses line editing; only for
	// a terminal on In.
	Interactive bool
	// CommandTimeout bounds each command that talks to the cluster (get,
	// put, delete, leader), including any wait for a leader (default 15s).
	// Give it the nodes' operation timeout: a node applies its own timeout
	// only to a context without a deadline, so a longer value here would
	// make a command wait longer than the nodes' documented timeout.
	CommandTimeout time.Duration
	// StartTimeout bounds new-client and restart, which start a node and
	// wait until it serves (default 60s, and at least CommandTimeout).
	StartTimeout time.Duration
	// HistoryFile keeps interactive history across runs (optional).
	HistoryFile string
	// Interrupt, if not nil, receives Ctrl-C (SIGINT): it cancels the
	// running command, or ends the shell when none runs.
	Interrupt <-chan os.Signal
}

// Prompt is shown before each command in interactive mode.
const Prompt = "kvstore> "

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// errQuit ends the loop normally.
var errQuit = errors.New("quit")

// errInterrupted ends a command canceled by Config.Interrupt.
var errInterrupted = errors.New("interrupted")

// DefaultCommandTimeout is Config.CommandTimeout's default: the nodes'
// default operation timeout.
const DefaultCommandTimeout = 15 * time.Second

// DefaultStartTimeout is Config.StartTimeout's default.
const DefaultStartTimeout = 60 * time.Second

func (cfg Config) withDefaults() Config {
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	cfg.StartTimeout = max(cfg.StartTimeout, cfg.CommandTimeout)
	return cfg
}

// Run runs the shell until quit, end of input or ctx ends.
func Run(ctx context.Context, b Backend, cfg Config) error {
	cfg = cfg.withDefaults()
	lines := make(chan string)
	readErr := make(chan error, 1)
	var closeInput func()
	if cfg.Interactive {
		fmt.Fprintln(cfg.Out, "KVStore shell: an embedded coordinator and node 0 are running. Type help for the commands.")
		ln := liner.NewLiner()
		ln.SetCtrlCAborts(true)
		if cfg.HistoryFile != "" {
			if f, err := os.Open(cfg.HistoryFile); err == nil {
				_, _ = ln.ReadHistory(f)
				_ = f.Close()
			}
		}
		closeInput = func() {
			if cfg.HistoryFile != "" {
				if f, err := os.Create(cfg.HistoryFile); err == nil {
					_, _ = ln.WriteHistory(f)
					_ = f.Close()
				}
			}
			_ = ln.Close()
		}
		next := make(chan struct{})
		go func() {
			for range next {
				line, err := ln.Prompt(Prompt)
				if errors.Is(err, liner.ErrPromptAborted) {
					line, err = "", nil
				}
				if err != nil {
					readErr <- err
					return
				}
				if strings.TrimSpace(line) != "" {
					ln.AppendHistory(line)
				}
				lines <- line
			}
		}()
		defer close(next)
		return loop(ctx, b, cfg, lines, readErr, func() { next <- struct{}{} }, closeInput)
	}
	go func() {
		sc := bufio.NewScanner(cfg.In)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		readErr <- err
	}()
	return loop(ctx, b, cfg, lines, readErr, func() {}, func() {})
}

func loop(ctx context.Context, b Backend, cfg Config, lines <-chan string, readErr <-chan error, ask func(), closeInput func()) error {
	defer closeInput()
	for {
		ask()
		select {
		case <-ctx.Done():
			return nil
		case <-cfg.Interrupt:
			return nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case line := <-lines:
			err := execInterruptible(ctx, b, cfg, line)
			if errors.Is(err, errQuit) {
				return nil
			}
			if err != nil {
				fmt.Fprintln(cfg.Err, "error: "+strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}
	}
}

// execInterruptible is Exec, canceled with errInterrupted when
// cfg.Interrupt receives a signal.
func execInterruptible(ctx context.Context, b Backend, cfg Config, line string) error {
	if cfg.Interrupt == nil {
		return Exec(ctx, b, cfg, line)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-cfg.Interrupt:
			cancel(errInterrupted)
		case <-done:
		}
	}()
	err := Exec(ctx, b, cfg, line)
	if err != nil && !errors.Is(err, errInterrupted) && errors.Is(context.Cause(ctx), errInterrupted) {
		err = fmt.Errorf("%w: %w", errInterrupted, err)
	}
	return err
}

// Exec runs one line against b, printing its result to cfg.Out. It
// returns the command's error (not printed) or errQuit.
func Exec(ctx context.Context, b Backend, cfg Config, line string) error {
	cmd, err := Parse(line)
	if err != nil || cmd.Name == "" {
		return err
	}
	cfg = cfg.withDefaults()
	timeout := cfg.CommandTimeout
	if cmd.Name == "new-client" || cmd.Name == "restart" {
		timeout = cfg.StartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := cfg.Out
	switch cmd.Name {
	case "help":
		fmt.Fprint(out, Help())
	case "quit":
		return errQuit
	case "get":
		v, found, err := b.Get(ctx, cmd.Node, cmd.Key)
		if err != nil {
			return err
		}
		if !found {
			v = "(nil)"
		}
		fmt.Fprintln(out, v)
	case "put":
		return ok(out, b.Put(ctx, cmd.Node, cmd.Key, cmd.Value))
	case "delete":
		return ok(out, b.Delete(ctx, cmd.Node, cmd.Key))
	case "list":
		for _, n := range b.List() {
			fmt.Fprintf(out, "%d %s %s %s %s\n", n.Num, n.ID, n.Addr, n.Role, n.State)
		}
	case "new-client":
		n, err := b.NewNode(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, n)
	case "rmi-down":
		return ok(out, b.RmiDown(cmd.Node))
	case "rmi-up":
		return ok(out, b.RmiUp(cmd.Node))
	case "zk-down":
		return ok(out, b.ZkDown(cmd.Node))
	case "zk-up":
		return ok(out, b.ZkUp(cmd.Node))
	case "kill":
		return ok(out, b.Kill(cmd.Node))
	case "restart":
		return ok(out, b.Restart(ctx, cmd.Node))
	case "remove":
		return ok(out, b.Remove(ctx, cmd.Node))
	case "leader":
		n, epoch, err := b.Leader(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d epoch %d\n", n, epoch)
	}
	return nil
}

func ok(out io.Writer, err error) error {
	if err == nil {
		fmt.Fprintln(out, "OK")
	}
	return err
}
