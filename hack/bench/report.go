package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Row is one line of the table.
type Row struct {
	Scenario string `json:"scenario"`
	Metric   string `json:"metric"`
	Unit     string `json:"unit"`
	// Runs holds each server's figure per run, in run order; null where
	// it was not measured.
	Runs map[string][]*float64 `json:"runs"`
	// Upstream, Ours and Tuned are the medians of the runs. Tuned is
	// upstream tuned as an operator would for the incident the scenario
	// plays (tunedScenarios).
	Upstream *float64 `json:"upstream"`
	Ours     *float64 `json:"ours"`
	Tuned    *float64 `json:"upstreamTuned,omitempty"`
	// Ratio is ours/upstream and TunedRatio ours/tuned, taken within each
	// run (both servers on the same data, one after the other): the
	// median over the runs and the spread.
	Ratio      *Spread `json:"ratio"`
	TunedRatio *Spread `json:"ratioTuned,omitempty"`
}

// Spread is the median of a figure over the runs, with its minimum and
// maximum.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int    `json:"memoryGiB"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
}

// Report is the result of a benchmark: several runs on one data set.
type Report struct {
	Time    string  `json:"time"`
	Commit  string  `json:"commit"`
	Machine Machine `json:"machine"`
	Params  Params  `json:"params"`
	// Orders is the order the servers were measured in, per run.
	Orders      [][]string        `json:"orders"`
	OursArgs    []string          `json:"oursArgs,omitempty"`
	Tuning      string            `json:"tuning,omitempty"`
	Versions    map[string]string `json:"versions"`
	SeedSeconds float64           `json:"seedSeconds"`
	Seconds     float64           `json:"seconds"`
	// Failed marks the report of a run a scenario failed: it holds what
	// was measured before.
	Failed bool   `json:"failed,omitempty"`
	Rows   []*Row `json:"rows"`

	runs    int
	samples map[[2]string]map[string]Latencies
}

func newReport(r *Run) *Report {
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	return &Report{
		Time:     time.Now().UTC().Format(time.RFC3339),
		Commit:   strings.TrimSpace(string(commit)),
		Machine:  machine(),
		Params:   r.Params,
		OursArgs: r.OursArgs,
		Tuning:   r.Tuning,
		Versions: map[string]string{},
		runs:     r.Runs,
		samples:  map[[2]string]map[string]Latencies{},
	}
}

func (rep *Report) row(scenario, metric, unit string) *Row {
	for _, r := range rep.Rows {
		if r.Scenario == scenario && r.Metric == metric {
			return r
		}
	}
	r := &Row{Scenario: scenario, Metric: metric, Unit: unit, Runs: map[string][]*float64{}}
	rep.Rows = append(rep.Rows, r)
	return r
}

// add records a server's figure in a run; NaN or infinity is a figure
// that could not be taken.
func (rep *Report) add(run int, scenario, metric, unit, server string, v float64) {
	r := rep.row(scenario, metric, unit)
	if r.Runs[server] == nil {
		r.Runs[server] = make([]*float64, rep.runs)
	}
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		r.Runs[server][run] = &v
	}
}

// summarize computes the medians and the ratios' spreads from the runs.
func (rep *Report) summarize() {
	for _, r := range rep.Rows {
		r.Upstream, r.Ours, r.Tuned = median(r.Runs["upstream"]), median(r.Runs["ours"]), median(r.Runs[tunedUpstream])
		r.Ratio, r.TunedRatio = ratios(r.Runs["ours"], r.Runs["upstream"]), ratios(r.Runs["ours"], r.Runs[tunedUpstream])
	}
}

// partial summarizes what a run that failed measured, with Failed set.
func (rep *Report) partial() *Report {
	rep.Failed = true
	rep.summarize()
	return rep
}

// median is the median of the figures taken, nil if none was.
func median(vs []*float64) *float64 {
	var taken []float64
	for _, v := range vs {
		if v != nil {
			taken = append(taken, *v)
		}
	}
	if len(taken) == 0 {
		return nil
	}
	m := spread(taken).Median
	return &m
}

// ratios is the spread of a/b over the runs in which both were measured.
func ratios(a, b []*float64) *Spread {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if a[i] != nil && b[i] != nil && *b[i] != 0 {
			rs = append(rs, *a[i] / *b[i])
		}
	}
	if len(rs) == 0 {
		return nil
	}
	s := spread(rs)
	return &s
}

func spread(vs []float64) Spread {
	vs = slices.Sorted(slices.Values(vs))
	n := len(vs)
	m := vs[n/2]
	if n%2 == 0 {
		m = (vs[n/2-1] + vs[n/2]) / 2
	}
	return Spread{Median: m, Min: vs[0], Max: vs[n-1]}
}

// tuned tells whether any row has a tuned upstream's figure.
func (rep *Report) tuned() bool {
	for _, r := range rep.Rows {
		if r.Tuned != nil {
			return true
		}
	}
	return false
}

func (rep *Report) addLatencies(run int, scenario, metric, server string, l Latencies) {
	key := [2]string{scenario, metric}
	if rep.samples[key] == nil {
		rep.samples[key] = map[string]Latencies{}
	}
	rep.samples[key][server] = append(rep.samples[key][server], l...)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		rep.add(run, scenario, fmt.Sprintf("%s p%g", metric, q*100), "ms", server, float64(l.Quantile(q))/float64(time.Millisecond))
	}
}

func format(v *float64) string {
	switch {
	case v == nil:
		return "-"
	case math.Abs(*v) >= 100:
		return fmt.Sprintf("%.0f", *v)
	case math.Abs(*v) >= 10:
		return fmt.Sprintf("%.1f", *v)
	default:
		return fmt.Sprintf("%.2f", *v)
	}
}

// formatRatio prints a ratio's median, and its range when there was more
// than one run.
func formatRatio(s *Spread) string {
	switch {
	case s == nil:
		return "-"
	case s.Min == s.Max:
		return fmt.Sprintf("%.2f", s.Median)
	default:
		return fmt.Sprintf("%.2f (%.2f–%.2f)", s.Median, s.Min, s.Max)
	}
}

// columns are the table's headings and a row's cells: medians, and
// ratios with their spread.
func (rep *Report) columns() ([]string, func(*Row) []string) {
	ofRuns := ""
	if rep.runs > 1 {
		ofRuns = fmt.Sprintf(" (median of %d)", rep.runs)
	}
	heads := []string{"scenario", "metric", "unit", "upstream" + ofRuns, "ours" + ofRuns, "ours/upstream"}
	tuned := rep.tuned()
	if tuned {
		heads = append(heads, "upstream tuned"+ofRuns, "ours/tuned")
	}
	return heads, func(r *Row) []string {
		cells := []string{r.Scenario, r.Metric, r.Unit, format(r.Upstream), format(r.Ours), formatRatio(r.Ratio)}
		if tuned {
			cells = append(cells, format(r.Tuned), formatRatio(r.TunedRatio))
		}
		return cells
	}
}

// Print writes the table for a terminal.
func (rep *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	heads, cells := rep.columns()
	fmt.Fprintln(tw, strings.Join(heads, "\t"))
	for _, r := range rep.Rows {
		fmt.Fprintln(tw, strings.Join(cells(r), "\t"))
	}
	tw.Flush()
}

// Markdown renders the report for docs/benchmarks.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	orders := make([]string, len(rep.Orders))
	for i, o := range rep.Orders {
		orders[i] = strings.Join(o, ", ")
	}
	fmt.Fprintf(&b, "Run %s, commit %s, %d run(s) in %.1f minutes, in the orders: %s.\n\n", rep.Time, rep.Commit, rep.runs, rep.Seconds/60, strings.Join(orders, "; "))
	if rep.Failed {
		b.WriteString("**The run failed** (see its log); the table holds what it measured before.\n\n")
	}
	fmt.Fprintf(&b, "Machine: %s, %d cores, %d GiB, Linux %s, %s.\n\n", rep.Machine.CPU, rep.Machine.Cores, rep.Machine.MemoryGiB, rep.Machine.Kernel, rep.Machine.Go)
	fmt.Fprintf(&b, "Servers: upstream `%s`, ours `%s`", rep.Versions["upstream"], rep.Versions["ours"])
	if len(rep.OursArgs) > 0 {
		fmt.Fprintf(&b, " with `%s`", strings.Join(rep.OursArgs, " "))
	}
	b.WriteString(".\n\n")
	p := rep.Params
	if rep.SeedSeconds > 0 {
		fmt.Fprintf(&b, "Data: %d objects: %d pods, %d nodes and Leases, %d namespaces, %d app label values (seeded into etcd in %.1fs).\n\n",
			p.Count(), p.Pods, p.Nodes, p.Namespaces, p.Apps, rep.SeedSeconds)
	}
	if p.KwokPods > 0 {
		fmt.Fprintf(&b, "Kwok cluster: %d nodes, %d pods in %d Deployments, each server on an etcd of its own.\n\n", p.KwokNodes, p.KwokPods, p.kwokDeployments())
	}
	if rep.tuned() {
		fmt.Fprintf(&b, "Upstream tuned: upstream's binary with `%s` applied (rows of %s only).\n\n", rep.Tuning, tunedScenarios)
	}
	if rep.runs > 1 {
		b.WriteString("Figures are medians of the runs; a ratio is taken within each run, then its median and (min–max) over the runs.\n\n")
	}
	heads, cells := rep.columns()
	fmt.Fprintf(&b, "| %s |\n|---|---|---|%s\n", strings.Join(heads, " | "), strings.Repeat("---:|", len(heads)-3))
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells(r), " | "))
	}
	return b.String()
}

// Write stores results.json and results.md in dir, and with plots the
// latency distributions under dir/plots.
func (rep *Report) Write(dir string, plots bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.Markdown()), 0o644); err != nil {
		return err
	}
	logf("wrote %s and %s", filepath.Join(dir, "results.json"), filepath.Join(dir, "results.md"))
	if !plots {
		return nil
	}
	return rep.plot(filepath.Join(dir, "plots"))
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// plot draws, per latency metric, the distribution (CDF) of both servers.
func (rep *Report) plot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	keys := make([][2]string, 0, len(rep.samples))
	for k := range rep.samples {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		p := plot.New()
		p.Title.Text = k[0] + ": " + k[1]
		p.X.Label.Text = "latency (ms)"
		p.Y.Label.Text = "fraction of requests"
		p.Legend.Top = false
		var lines []any
		for _, name := range []string{"upstream", "ours", tunedUpstream} {
			l := rep.samples[k][name]
			if len(l) == 0 {
				continue
			}
			s := append(Latencies(nil), l...)
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
			pts := make(plotter.XYs, len(s))
			for i, d := range s {
				pts[i].X = float64(d) / float64(time.Millisecond)
				pts[i].Y = float64(i+1) / float64(len(s))
			}
			lines = append(lines, name, pts)
		}
		if err := plotutil.AddLines(p, lines...); err != nil {
			return err
		}
		file := filepath.Join(dir, strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(k[0]+"-"+k[1]), "-"), "-")+".png")
		if err := p.Save(7*vg.Inch, 4*vg.Inch, file); err != nil {
			return err
		}
	}
	logf("wrote %d plots to %s", len(keys), dir)
	return nil
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(data), "MemTotal: %d kB", &kb)
		m.MemoryGiB = int(math.Round(float64(kb) / (1 << 20)))
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}
