package shell

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kvstore/kvstore/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz/")

// FuzzParse checks Parse on any line: it never panics; an error is one of
// the three kinds the shell prints; a command is one of specs, with its
// arguments taken from the line (the name is its first field, the node
// number its second, the key its third, the value the rest of the line
// after one separator; fields are separated by blanks), and formatting it back gives a line that parses to
// the same command. Leading blanks and trailing line ends change nothing.
func FuzzParse(f *testing.F) {
	// The seeds are in testdata/fuzz/FuzzParse (TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := Parse(line)
		if again, err2 := Parse(" \t" + line + "\r\n"); again != cmd || fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("%q parses as %+v (%v), with blanks before and a line end after as %+v (%v)", line, cmd, err, again, err2)
		}
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "unknown command ") && !strings.HasPrefix(msg, "usage: ") && !strings.HasPrefix(msg, "bad node number ") {
				t.Fatalf("%q: unexpected error %q", line, msg)
			}
			if cmd != (Command{}) {
				t.Fatalf("%q: error %v with a command %+v", line, err, cmd)
			}
			return
		}
		body := strings.TrimRight(line, "\r\n")
		fields := strings.FieldsFunc(body, isBlank)
		if cmd.Name == "" {
			if cmd != (Command{}) || (len(fields) > 0 && !strings.HasPrefix(fields[0], "#")) {
				t.Fatalf("%q: parsed as a blank or comment line: %+v", line, cmd)
			}
			return
		}
		sp, ok := lookup(cmd.Name)
		if !ok || sp.name != cmd.Name {
			t.Fatalf("%q: unknown command name %q", line, cmd.Name)
		}
		if fields[0] != cmd.Name && !(fields[0] == "exit" && cmd.Name == "quit") {
			t.Fatalf("%q: command %q is not the first field %q", line, cmd.Name, fields[0])
		}
		next := 1
		if sp.node {
			if n, err := strconv.Atoi(fields[next]); err != nil || n != cmd.Node || n < 0 {
				t.Fatalf("%q: node %d is not the second field %q", line, cmd.Node, fields[next])
			}
			next++
		} else if cmd.Node != 0 {
			t.Fatalf("%q: %s takes no node, got %d", line, cmd.Name, cmd.Node)
		}
		if sp.key {
			if cmd.Key == "" || cmd.Key != fields[next] {
				t.Fatalf("%q: key %q is not field %d %q", line, cmd.Key, next+1, fields[next])
			}
			next++
		} else if cmd.Key != "" {
			t.Fatalf("%q: %s takes no key, got %q", line, cmd.Name, cmd.Key)
		}
		if sp.value {
			if cmd.Value == "" || !strings.HasSuffix(body, cmd.Value) {
				t.Fatalf("%q: value %q is not the end of the line", line, cmd.Value)
			}
			before := strings.TrimSuffix(body, cmd.Value)
			if sep := rune(before[len(before)-1]); !isBlank(sep) {
				t.Fatalf("%q: value %q does not follow a separator", line, cmd.Value)
			}
			if got := strings.FieldsFunc(before, isBlank); len(got) != next {
				t.Fatalf("%q: %d fields before the value %q, want %d", line, len(got), cmd.Value, next)
			}
		} else if cmd.Value != "" || len(fields) != next {
			t.Fatalf("%q: %s takes %d fields, got %d (value %q)", line, cmd.Name, next, len(fields), cmd.Value)
		}
		if again, err := Parse(format(cmd, sp)); err != nil || again != cmd {
			t.Fatalf("%q parses as %+v, formatted as %q, which parses as %+v (%v)", line, cmd, format(cmd, sp), again, err)
		}
	})
}

func isBlank(r rune) bool { return strings.ContainsRune(blanks, r) }

// format writes cmd as the shell's usage line shows it.
func format(cmd Command, sp spec) string {
	s := cmd.Name
	if sp.node {
		s += " " + strconv.Itoa(cmd.Node)
	}
	if sp.key {
		s += " " + cmd.Key
	}
	if sp.value {
		s += " " + cmd.Value
	}
	return s
}

// TestFuzzCorpus keeps testdata/fuzz/FuzzParse/ in step with the golden
// transcripts: each line the shell is fed there is a seed
// (-update-corpus rewrites them).
func TestFuzzCorpus(t *testing.T) {
	var seeds []fuzzcorpus.Seed
	files, _ := filepath.Glob("testdata/*.txt")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in, _, _ := strings.Cut(strings.TrimPrefix(string(data), "-- in --\n"), "-- out --")
		for i, line := range strings.Split(strings.TrimRight(in, "\n"), "\n") {
			seeds = append(seeds, fuzzcorpus.Seed{Name: fmt.Sprintf("%s-%02d", strings.TrimSuffix(filepath.Base(f), ".txt"), i+1), Values: []any{line}})
		}
	}
	for i, line := range []string{"", "# a comment", "put 0 k  two  spaces kept ", "exit", "get\t0\tk", "put 1 k \t", "get +1 k", "get 99999999999999999999 k", "put 3 key value with  spaces", "rmi-down 2", "list"} {
		seeds = append(seeds, fuzzcorpus.Seed{Name: fmt.Sprintf("edge-%02d", i+1), Values: []any{line}})
	}
	fuzzcorpus.Sync(t, "FuzzParse", *updateCorpus, seeds)
}
