package durable

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// logFile is the log file the committer writes.
type logFile struct {
	f     *os.File
	salt  uint64 // the file header's (groups are sealed with it)
	size  int64  // bytes written, header included
	trace func(walEvent)
}

// walEvent is one operation on the log's files, as a test sees it
// (Options.trace): what a crash can keep or lose depends on their order.
type walEvent struct {
	op   walOp
	name string // the file's base name
	off  int64  // walWrite: where the data goes
	data []byte // walWrite: a copy of what was written
}

type walOp int

const (
	walCreate  walOp = iota // a file created (in the directory once it is synced)
	walWrite                // data written (on disk once the file is synced)
	walSync                 // the file's data synced
	walDirSync              // the directory synced: creations and removals are on disk
	walRemove               // a file removed (for good once the directory is synced)
)

// createWAL creates the log file starting at index first, writes its
// header and, unless noSync, syncs the file and then dir, so that the
// header is on disk before any group (scanLog relies on it) and the file
// before anything refers to it.
func createWAL(dir string, first uint64, noSync bool, trace func(walEvent)) (*logFile, error) {
	name := walName(first)
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	var salt [8]byte
	rand.Read(salt[:]) // never fails (crypto/rand)
	l := &logFile{f: f, salt: binary.LittleEndian.Uint64(salt[:]), trace: trace}
	if trace != nil {
		trace(walEvent{op: walCreate, name: name})
	}
	if !writeBareRecords {
		err = l.write(appendFileHeader(nil, l.salt))
	}
	if err == nil && !noSync {
		if err = l.sync(); err == nil {
			err = syncDir(dir, trace)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("creating %s: %w", l.f.Name(), err)
	}
	return l, nil
}

// write appends b to the file.
func (l *logFile) write(b []byte) error {
	if l.trace != nil {
		l.trace(walEvent{op: walWrite, name: filepath.Base(l.f.Name()), off: l.size, data: slices.Clone(b)})
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	return err
}

// sync fdatasyncs the file.
func (l *logFile) sync() error {
	if err := datasync(l.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", l.f.Name(), err)
	}
	if l.trace != nil {
		l.trace(walEvent{op: walSync, name: filepath.Base(l.f.Name())})
	}
	return nil
}

// SyncDir fsyncs directory dir, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir is SyncDir, seen by trace.
func syncDir(dir string, trace func(walEvent)) error {
	err := SyncDir(dir)
	if err == nil && trace != nil {
		trace(walEvent{op: walDirSync})
	}
	return err
}

// removeWAL removes the given log files (a file already gone is fine) and,
// unless noSync, syncs dir: a removal the directory does not yet hold may
// be undone by a crash, and readWAL would then read a file the checkpoint
// covers (it skips those) next to newer ones.
func removeWAL(dir string, files []walFile, noSync bool, trace func(walEvent)) error {
	if len(files) == 0 {
		return nil
	}
	var errs []error
	for _, f := range files {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		} else if trace != nil {
			trace(walEvent{op: walRemove, name: f.name})
		}
	}
	if !noSync {
		errs = append(errs, syncDir(dir, trace))
	}
	return errors.Join(errs...)
}
