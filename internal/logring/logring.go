// Package logring keeps the last log records of a test's nodes in memory, so
// that a test that fails can print what the cluster said just before, while a
// test that passes prints nothing. Warnings and errors are also tallied over
// the whole run, since the one that explains a failure is often older than
// the last records.
package logring

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Ring is an slog.Handler that keeps the last Size records of every level.
// It is safe for concurrent use; handlers derived with WithAttrs and
// WithGroup share its buffer.
type Ring struct {
	buf    *buffer
	attrs  string // formatted attributes added by WithAttrs
	prefix string // groups opened by WithGroup, each followed by "."
}

type buffer struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	// notable tallies warnings and errors by message, in the order each
	// was first logged (at most maxNotable distinct; later ones count in
	// dropped).
	notable map[string]*tally
	order   []string
	dropped int
}

// tally is one warning or error message: how often, and its first record.
type tally struct {
	n     int
	first string
}

// maxNotable bounds the distinct warnings and errors kept.
const maxNotable = 40

// New returns a Ring keeping the last size records.
func New(size int) *Ring {
	return &Ring{buf: &buffer{lines: make([]string, size)}}
}

// Logger returns a logger writing to r at every level.
func (r *Ring) Logger() *slog.Logger { return slog.New(r) }

// Enabled keeps every level: the debug lines are the ones that explain.
func (r *Ring) Enabled(context.Context, slog.Level) bool { return true }

// Handle formats rec as one line and keeps it.
func (r *Ring) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s%s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message, r.attrs)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s%s=%v", r.prefix, a.Key, a.Value)
		return true
	})
	r.buf.add(b.String(), rec.Level >= slog.LevelWarn, rec.Message)
	return nil
}

// WithAttrs returns a handler adding attrs to every record, sharing r's buffer.
func (r *Ring) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	var b strings.Builder
	b.WriteString(r.attrs)
	for _, a := range attrs {
		fmt.Fprintf(&b, " %s%s=%v", r.prefix, a.Key, a.Value)
	}
	c.attrs = b.String()
	return &c
}

// WithGroup returns a handler qualifying later attributes with name.
func (r *Ring) WithGroup(name string) slog.Handler {
	c := *r
	c.prefix = r.prefix + name + "."
	return &c
}

func (b *buffer) add(line string, notable bool, msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if notable {
		switch t := b.notable[msg]; {
		case t != nil:
			t.n++
		case len(b.order) < maxNotable:
			if b.notable == nil {
				b.notable = make(map[string]*tally)
			}
			b.notable[msg] = &tally{n: 1, first: line}
			b.order = append(b.order, msg)
		default:
			b.dropped++
		}
	}
	b.lines[b.next] = line
	b.next++
	if b.next == len(b.lines) {
		b.next, b.full = 0, true
	}
}

// Lines returns the kept records, oldest first.
func (r *Ring) Lines() []string {
	b := r.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.full {
		return append([]string(nil), b.lines[:b.next]...)
	}
	return append(append([]string(nil), b.lines[b.next:]...), b.lines[:b.next]...)
}

// Notable is every distinct warning and error message logged since the
// ring was made, in the order each first came, one a line: how many
// times, and its first record in full ("" if none).
func (r *Ring) Notable() string {
	b := r.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.order) == 0 {
		return ""
	}
	var s strings.Builder
	fmt.Fprintf(&s, "warnings and errors since the start, by message, first record of each:\n")
	for _, msg := range b.order {
		t := b.notable[msg]
		fmt.Fprintf(&s, "%6dx %s\n", t.n, t.first)
	}
	if b.dropped > 0 {
		fmt.Fprintf(&s, "(and %d records of other messages)\n", b.dropped)
	}
	return s.String()
}

// String is the warnings and errors since the start (Notable), then the
// kept records, one a line, oldest first, under a heading that says when
// they were read.
func (r *Ring) String() string {
	lines := r.Lines()
	return fmt.Sprintf("%slast %d log records (read %s):\n%s", r.Notable(), len(lines), time.Now().Format("15:04:05.000"), strings.Join(lines, "\n"))
}
