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
	name  string // its base name in the log's directory
	salt  uint64 // the file header's (groups are sealed with it)
	size  int64  // bytes written, header included
	trace func(walEvent)
}

// walEvent is one operation on the log's files, as a test sees it
// (Options.trace): what a crash can keep or lose depends on their order.
type walEvent struct {
	op   walOp
	name string // the file's base name
	to   string // walRename: the new name
	off  int64  // walWrite: where the data goes
	data []byte // walWrite: a copy of what was written
}

type walOp int

const (
	walCreate  walOp = iota // a file created (in the directory once it is synced)
	walWrite                // data written (on disk once the file is synced)
	walSync                 // the file's data synced
	walDirSync              // the directory synced: creations, renames and removals are on disk
	walRemove               // a file removed (for good once the directory is synced)
	walRename               // a file renamed (for good once the directory is synced)
)

// walNextName is the log file being prepared for the next rotation
// (prepareWAL); it becomes a log file only once renamed. Open removes one
// that a crash left.
const walNextName = "wal-next.tmp"

// walPreallocBytes is the size a log file is created with: its header,
// then zeros. Groups overwrite the zeros, so the file's size and blocks
// do not change when a group is written, and the fdatasync after it has
// only the data to flush, not the file's metadata (on this project's CI
// disk, ext4: 220 rather than 440 us for a 4 KiB group). Like etcd's
// preallocated WAL segments, but written, not only allocated: ext4 marks
// an fallocated block unwritten, and the first write to it changes
// metadata too (400 us). A group beyond it extends the file as before.
func walPreallocBytes() int64 { return walRotateBytes + walRotateBytes/4 }

// zeros is written to preallocate log files.
var zeros = make([]byte, 1<<20)

// createWAL creates the log file starting at index first: prepareWAL, then
// installWAL.
func createWAL(dir string, first uint64, prealloc int64, noSync bool, trace func(walEvent)) (*logFile, error) {
	l, err := prepareWAL(dir, prealloc, noSync, trace)
	if err != nil {
		return nil, err
	}
	if err := installWAL(l, dir, first, noSync); err != nil {
		l.f.Close()
		return nil, err
	}
	return l, nil
}

// prepareWAL creates walNextName (replacing one left there), writes its
// header and zeros up to prealloc bytes (walPreallocBytes) and, unless
// noSync, syncs it, so that the header is on disk before any group
// (scanLog relies on it). The committer prepares the next file in the
// background while it writes the current one (DB.prepareNext), as etcd's
// filePipeline does.
func prepareWAL(dir string, prealloc int64, noSync bool, trace func(walEvent)) (*logFile, error) {
	path := filepath.Join(dir, walNextName)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	var salt [8]byte
	rand.Read(salt[:]) // never fails (crypto/rand)
	l := &logFile{f: f, name: walNextName, salt: binary.LittleEndian.Uint64(salt[:]), trace: trace}
	if trace != nil {
		trace(walEvent{op: walCreate, name: l.name})
	}
	if !writeBareRecords {
		err = l.preallocate(appendFileHeader(nil, l.salt), prealloc)
	}
	if err == nil && !noSync {
		err = l.sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	return l, nil
}

// preallocate writes header at the start of the empty file and zeros after
// it up to size; the file's size then counts the header only.
func (l *logFile) preallocate(header []byte, size int64) error {
	if _, err := l.f.WriteAt(header, 0); err != nil {
		return err
	}
	end := max(size, int64(len(header)))
	for off := int64(len(header)); off < end; {
		n, err := l.f.WriteAt(zeros[:min(int64(len(zeros)), end-off)], off)
		if err != nil {
			return err
		}
		off += int64(n)
	}
	if l.trace != nil {
		data := make([]byte, end)
		copy(data, header)
		l.trace(walEvent{op: walWrite, name: l.name, data: data})
	}
	l.size = int64(len(header))
	return nil
}

// installWAL renames the prepared file l to the log file starting at
// index first and, unless noSync, syncs dir, so that the file is in the
// directory before anything refers to it.
func installWAL(l *logFile, dir string, first uint64, noSync bool) error {
	name := walName(first)
	if err := os.Rename(filepath.Join(dir, l.name), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("creating log file %s: %w", name, err)
	}
	if l.trace != nil {
		l.trace(walEvent{op: walRename, name: l.name, to: name})
	}
	l.name = name
	if !noSync {
		if err := syncDir(dir, l.trace); err != nil {
			return fmt.Errorf("creating log file %s: %w", name, err)
		}
	}
	return nil
}

// write appends b to what the file holds (over its preallocated zeros).
func (l *logFile) write(b []byte) error {
	if l.trace != nil {
		l.trace(walEvent{op: walWrite, name: l.name, off: l.size, data: slices.Clone(b)})
	}
	n, err := l.f.WriteAt(b, l.size)
	l.size += int64(n)
	return err
}

// sync fdatasyncs the file.
func (l *logFile) sync() error {
	if err := datasync(l.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", l.name, err)
	}
	if l.trace != nil {
		l.trace(walEvent{op: walSync, name: l.name})
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
