package ops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/ops"
)

// dashboardPath is the Grafana dashboard shipped in deploy/grafana.
var dashboardPath = filepath.Join("..", "deploy", "grafana", "kvstore.json")

// dashboardPanel is the part of a Grafana panel the test reads; rows nest
// their panels (collapsed rows) in Panels.
type dashboardPanel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Panels  []dashboardPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	SchemaVersion int              `json:"schemaVersion"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where, expr string
}

// dashboardQueries reads the dashboard at path and returns its panels'
// expressions and its query variables' metric names (label_values(m, l)
// yields the query "m").
func dashboardQueries(t *testing.T, path string) []query {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d, want a Grafana 10+ dashboard (>= 36)", path, d.SchemaVersion)
	}
	var qs []query
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if p.Type != "row" && p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("%s: panel %q: datasource uid %q, want ${DS_PROMETHEUS}", path, p.Title, p.Datasource.UID)
			}
			for i, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %d has no expr", path, p.Title, i)
					continue
				}
				qs = append(qs, query{fmt.Sprintf("panel %q target %d", p.Title, i), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	// The top-level panels tile Grafana's 24-column grid without overlap.
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: panel %q: gridPos %+v outside the 24-column grid", path, p.Title, g)
		}
		overlaps := map[string]bool{}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok && !overlaps[other] {
					overlaps[other] = true
					t.Errorf("%s: panel %q overlaps panel %q at (%d, %d)", path, p.Title, other, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %q: %v", path, v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %q: query %q is not label_values(metric, label)", path, v.Name, q.Query)
			continue
		}
		qs = append(qs, query{fmt.Sprintf("variable %q", v.Name), m[1]})
	}
	return qs
}

var (
	promString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	// promMatchers are label matchers and range or subquery selectors.
	promMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	// promGrouping are the label lists of aggregations and vector matching.
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// promIdent is an identifier not preceded by a character that would
	// make it part of a number, a longer name or a Grafana variable.
	promIdent = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	promWords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true,
	}
)

// metricNames returns the metric (series) names expr selects, as written:
// a histogram's series keep their _bucket, _sum or _count suffix. Function
// and aggregation names (an identifier followed by "("), keywords, label
// names, strings, durations and numbers are not metric names.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[2]:m[3]]
		if promWords[strings.ToLower(name)] {
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(s[m[3]:], " \t\n"), "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// exposedNames returns the series names the families expose: a counter's
// or gauge's name; a histogram's name with _bucket, _sum and _count (the
// bare name selects nothing); a summary's name and its _sum and _count.
func exposedNames(fams []*dto.MetricFamily, into map[string]bool) {
	for _, f := range fams {
		n := f.GetName()
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			into[n+"_bucket"], into[n+"_sum"], into[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			into[n], into[n+"_sum"], into[n+"_count"] = true, true, true
		default:
			into[n] = true
		}
	}
}

// missingMetrics returns, one line each, the metric names the queries
// select that exposed lacks.
func missingMetrics(qs []query, exposed map[string]bool) []string {
	var missing []string
	for _, q := range qs {
		for _, name := range metricNames(q.expr) {
			if !exposed[name] {
				missing = append(missing, fmt.Sprintf("%s: %s (in %s)", q.where, name, q.expr))
			}
		}
	}
	return missing
}

// TestDashboardMetricNames checks the name extraction the dashboard test
// relies on, and that a misspelled or wrongly suffixed name is reported.
func TestDashboardMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.99, sum by (op, le) (rate(kvstore_operation_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"kvstore_operation_duration_seconds_bucket"}},
		{`sum by (op) (rate(a_sum[5m])) / sum by (op) (rate(a_count[5m]))`, []string{"a_sum", "a_count"}},
		{`sum without(le) (x_total{op=~"put|delete", outcome!="ok"}) > bool 1e-3`, []string{"x_total"}},
		{`max(g) - min(g offset 1h) or on (instance) group_left(follower) h`, []string{"g", "h"}},
		{`rate(c[5m:1m]) * 2 and ignoring(job) kvstore_serving == 1`, []string{"c", "kvstore_serving"}},
		{`sum(rate({__name__="hidden"}[1m]))`, nil},
		{`label_replace(up, "a", "$1", "b", "(.*)")`, []string{"up"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%s) = %q, want %q", tc.expr, got, tc.want)
		}
	}

	h := "kvstore_operation_duration_seconds"
	typ := dto.MetricType_HISTOGRAM
	exposed := map[string]bool{}
	exposedNames([]*dto.MetricFamily{{Name: &h, Type: &typ}}, exposed)
	qs := []query{
		{"ok", `rate(kvstore_operation_duration_seconds_count[1m])`},
		{"bare", `rate(kvstore_operation_duration_seconds[1m])`},
		{"misspelled", `rate(kvstore_operation_duration_second_bucket[1m])`},
	}
	got := missingMetrics(qs, exposed)
	if len(got) != 2 || !strings.HasPrefix(got[0], "bare: ") || !strings.HasPrefix(got[1], "misspelled: ") {
		t.Errorf("missingMetrics = %q, want the bare histogram name and the misspelled one", got)
	}
}

// TestDashboardQueriesExist fails if a query of deploy/grafana/kvstore.json
// selects a metric real nodes do not export: it runs a 3-node cluster,
// drives writes, cache misses, hits and invalidations through it, and
// gathers each node's registry (as its /metrics serves it) until every
// name the dashboard uses has appeared on some node (replication lag only
// shows on the leader, the last append's age only on followers).
func TestDashboardQueriesExist(t *testing.T) {
	qs := dashboardQueries(t, dashboardPath)
	if len(qs) < 20 {
		t.Fatalf("%s: %d queries, want the whole dashboard (>= 20)", dashboardPath, len(qs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	leader, _, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type gatherer interface {
		Gather() ([]*dto.MetricFamily, error)
	}
	var regs []gatherer
	for i := range c.Size() {
		nd, err := c.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := ops.NewRegistry(nd.Collectors()...)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
	}
	// Traffic: a write, reads through every node (a miss, then a hit on
	// the followers), a write that invalidates the cached copies, a delete.
	if err := c.Put(ctx, leader, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for i := range c.Size() {
			if _, _, err := c.Get(ctx, i, "k"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Put(ctx, leader, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, leader, "k"); err != nil {
		t.Fatal(err)
	}

	soon.Succeeds(t, 20*time.Second, func() error {
		exposed := map[string]bool{}
		for i, reg := range regs {
			fams, err := reg.Gather()
			if err != nil {
				return fmt.Errorf("gather node %d: %w", i, err)
			}
			exposedNames(fams, exposed)
		}
		if missing := missingMetrics(qs, exposed); len(missing) > 0 {
			return fmt.Errorf("%s queries metrics no node exports:\n%s", dashboardPath, strings.Join(missing, "\n"))
		}
		return nil
	})
}
