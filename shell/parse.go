package shell

import (
	"fmt"
	"strconv"
	"strings"
)

// Command is one parsed shell line.
type Command struct {
	Name  string // canonical command name ("" for a blank or comment line)
	Node  int    // node number, for commands that take one
	Key   string // for get, put, delete
	Value string // for put: the rest of the line, inner spacing kept
}

// spec describes one command: its arguments and help line.
type spec struct {
	name  string
	args  string // usage after the name
	help  string
	node  bool // takes <n>
	key   bool // takes <key>
	value bool // takes <value> (rest of line)
}

// specs lists every command in help order.
var specs = []spec{
	{name: "help", help: "list the commands"},
	{name: "get", args: "<n> <key>", help: "read key through node n; prints the value or (nil)", node: true, key: true},
	{name: "put", args: "<n> <key> <value>", help: "set key through node n; the value is the rest of the line", node: true, key: true, value: true},
	{name: "delete", args: "<n> <key>", help: "remove key through node n", node: true, key: true},
	{name: "list", help: "one line per node: number, id, address, role, state"},
	{name: "new-client", help: "start one more node, which joins the cluster; prints its number"},
	{name: "rmi-down", args: "<n>", help: "stop node n's inbound node-to-node RPC", node: true},
	{name: "rmi-up", args: "<n>", help: "resume node n's inbound node-to-node RPC", node: true},
	{name: "zk-down", args: "<n>", help: "cut node n's connection to the coordinator", node: true},
	{name: "zk-up", args: "<n>", help: "restore node n's connection to the coordinator", node: true},
	{name: "kill", args: "<n>", help: "crash node n (its memory is lost)", node: true},
	{name: "restart", args: "<n>", help: "start killed node n again with the same id", node: true},
	{name: "remove", args: "<n>", help: "remove node n from the voters (refused if the rest lack a majority of live voters); it stops", node: true},
	{name: "leader", help: "print the leader's node number and epoch"},
	{name: "quit", help: "stop every node and the coordinator, and exit (also: exit, end of input)"},
}

func lookup(name string) (spec, bool) {
	if name == "exit" {
		name = "quit"
	}
	for _, s := range specs {
		if s.name == name {
			return s, true
		}
	}
	return spec{}, false
}

// blanks separate the fields of a line: spaces and tabs, and the other
// ASCII white space, so that a carriage return (a CRLF line with a blank
// before its end, say) never ends up inside a key or a node number, and
// what Parse ignores at the end of a line is what separates fields.
const blanks = " \t\r\n\v\f"

// Parse parses one input line. Blank lines and lines starting with # give
// a Command with an empty Name.
func Parse(line string) (Command, error) {
	line = strings.TrimRight(line, "\r\n")
	rest := strings.TrimLeft(line, blanks)
	if rest == "" || strings.HasPrefix(rest, "#") {
		return Command{}, nil
	}
	name, rest := nextField(rest)
	sp, ok := lookup(name)
	if !ok {
		return Command{}, fmt.Errorf("unknown command %q (try help)", name)
	}
	usage := func() error {
		return fmt.Errorf("usage: %s", strings.TrimSpace(sp.name+" "+sp.args))
	}
	cmd := Command{Name: sp.name}
	if sp.node {
		var f string
		f, rest = nextField(rest)
		if f == "" {
			return Command{}, usage()
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return Command{}, fmt.Errorf("bad node number %q: want a number from 0", f)
		}
		cmd.Node = n
	}
	if sp.key {
		cmd.Key, rest = nextField(rest)
		if cmd.Key == "" {
			return Command{}, usage()
		}
	}
	if sp.value {
		// The value is the rest of the line after the one separator that
		// follows the key: inner and trailing spaces are kept.
		if rest == "" {
			return Command{}, usage()
		}
		cmd.Value = rest[1:]
		if cmd.Value == "" {
			return Command{}, usage()
		}
		return cmd, nil
	}
	if strings.Trim(rest, blanks) != "" {
		return Command{}, usage()
	}
	return cmd, nil
}

// nextField splits off the first field of s (fields are separated by
// blanks); rest keeps the separator that ended the field.
func nextField(s string) (field, rest string) {
	s = strings.TrimLeft(s, blanks)
	i := strings.IndexAny(s, blanks)
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// Help is the text printed by `help`, one command per line.
func Help() string {
	var b strings.Builder
	for _, s := range specs {
		fmt.Fprintf(&b, "%-30s %s\n", strings.TrimSpace(s.name+" "+s.args), s.help)
	}
	return b.String()
}
