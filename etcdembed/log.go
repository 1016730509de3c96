package etcdembed

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that forwards etcd's records of level floor and
// higher to a slog.Logger, if its handler enables them. Start uses floor
// error, so etcd stays quiet unless something is wrong; StartMember uses
// debug and leaves the choice to the handler. Once closing is set,
// error-level records are dropped: etcd reports every listener it closes on
// shutdown as an error, and so are the warnings about them.
type slogCore struct {
	log     *slog.Logger
	closing *atomic.Bool    // shared with the Server; set when Close starts
	floor   zapcore.Level   // lowest level forwarded
	fields  []zapcore.Field // from With, prepended to every record
}

var _ zapcore.Core = (*slogCore)(nil)

func (c *slogCore) Enabled(l zapcore.Level) bool {
	if l < c.floor || (l == zapcore.ErrorLevel && c.closing.Load()) {
		return false
	}
	return c.log.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, closing: c.closing, floor: c.floor, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// benignAtStart reports the error etcd logs when its storage-version
// monitor runs before the backend has committed the first term (a fresh
// member, closed or busy right after start); the monitor retries later.
func benignAtStart(e zapcore.Entry, fields []zapcore.Field) bool {
	if e.Message != "failed to update storage version" {
		return false
	}
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && strings.Contains(err.Error(), "missing term information") {
			return true
		}
	}
	return false
}

// closedListener reports a record about a listener that was closed, e.g.
// "stopping insecure grpc server due to error" with "use of closed network
// connection", which etcd logs as a warning for every client listener it
// closes on shutdown.
func closedListener(fields []zapcore.Field) bool {
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && (errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "use of closed network connection")) {
			return true
		}
	}
	return false
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if benignAtStart(e, fields) || (c.closing.Load() && closedListener(fields)) {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	c.log.LogAttrs(context.Background(), slogLevel(e.Level), "etcd: "+e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// slogLevel maps a zap level to the nearest slog level.
func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}
