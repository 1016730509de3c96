package etcdembed

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that forwards etcd's error-level (and higher)
// records to a slog.Logger, so etcd stays quiet unless something is wrong.
// Once closing is set, only records above error level pass: etcd reports every
// listener it closes on shutdown as an error.
type slogCore struct {
	log     *slog.Logger
	closing *atomic.Bool    // shared with the Server; set when Close starts
	fields  []zapcore.Field // from With, prepended to every record
}

var _ zapcore.Core = (*slogCore)(nil)

func (c *slogCore) Enabled(l zapcore.Level) bool {
	floor := zapcore.ErrorLevel
	if c.closing.Load() {
		floor = zapcore.DPanicLevel
	}
	return l >= floor && c.log.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, closing: c.closing, fields: append(slices.Clip(c.fields), fields...)}
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

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if benignAtStart(e, fields) {
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
