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
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Row is one line of the table; a value is nil where a server did not
// measure it.
type Row struct {
	Scenario string   `json:"scenario"`
	Metric   string   `json:"metric"`
	Unit     string   `json:"unit"`
	Upstream *float64 `json:"upstream"`
	Ours     *float64 `json:"ours"`
	// Ratio is ours / upstream.
	Ratio *float64 `json:"ratio"`
	// Tuned is upstream tuned as an operator would for the incident the
	// scenario plays (tunedScenarios), and TunedRatio ours / Tuned.
	Tuned      *float64 `json:"upstreamTuned,omitempty"`
	TunedRatio *float64 `json:"ratioTuned,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int    `json:"memoryGiB"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
}

// Report is the result of a run.
type Report struct {
	Time        string            `json:"time"`
	Commit      string            `json:"commit"`
	Machine     Machine           `json:"machine"`
	Params      Params            `json:"params"`
	Order       []string          `json:"order"`
	OursArgs    []string          `json:"oursArgs,omitempty"`
	Tuning      string            `json:"tuning,omitempty"`
	Versions    map[string]string `json:"versions"`
	SeedSeconds float64           `json:"seedSeconds"`
	Rows        []*Row            `json:"rows"`

	samples map[[2]string]map[string]Latencies
}

func newReport(r *Run) *Report {
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	return &Report{
		Time:     time.Now().UTC().Format(time.RFC3339),
		Commit:   strings.TrimSpace(string(commit)),
		Machine:  machine(),
		Params:   r.Params,
		Order:    r.Order,
		OursArgs: r.OursArgs,
		Tuning:   r.Tuning,
		Versions: map[string]string{},
		samples:  map[[2]string]map[string]Latencies{},
	}
}

func (rep *Report) row(scenario, metric, unit string) *Row {
	for _, r := range rep.Rows {
		if r.Scenario == scenario && r.Metric == metric {
			return r
		}
	}
	r := &Row{Scenario: scenario, Metric: metric, Unit: unit}
	rep.Rows = append(rep.Rows, r)
	return r
}

func (rep *Report) add(scenario, metric, unit, server string, v float64) {
	r := rep.row(scenario, metric, unit)
	var val *float64
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		val = &v
	}
	switch server {
	case "ours":
		r.Ours = val
	case tunedUpstream:
		r.Tuned = val
	default:
		r.Upstream = val
	}
	r.Ratio, r.TunedRatio = ratio(r.Ours, r.Upstream), ratio(r.Ours, r.Tuned)
}

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	r := *a / *b
	return &r
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

func (rep *Report) addLatencies(scenario, metric, server string, l Latencies) {
	key := [2]string{scenario, metric}
	if rep.samples[key] == nil {
		rep.samples[key] = map[string]Latencies{}
	}
	rep.samples[key][server] = l
	for _, q := range []float64{0.5, 0.9, 0.99} {
		rep.add(scenario, fmt.Sprintf("%s p%g", metric, q*100), "ms", server, float64(l.Quantile(q))/float64(time.Millisecond))
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

func formatRatio(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
}

// Print writes the table for a terminal.
func (rep *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	tuned := rep.tuned()
	fmt.Fprint(tw, "scenario\tmetric\tunit\tupstream\tours\tours/upstream\t")
	if tuned {
		fmt.Fprint(tw, "upstream tuned\tours/tuned\t")
	}
	fmt.Fprintln(tw)
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t", r.Scenario, r.Metric, r.Unit, format(r.Upstream), format(r.Ours), formatRatio(r.Ratio))
		if tuned {
			fmt.Fprintf(tw, "%s\t%s\t", format(r.Tuned), formatRatio(r.TunedRatio))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// Markdown renders the report for docs/benchmarks.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s, commit %s, order %s.\n\n", rep.Time, rep.Commit, strings.Join(rep.Order, " then "))
	fmt.Fprintf(&b, "Machine: %s, %d cores, %d GiB, Linux %s, %s.\n\n", rep.Machine.CPU, rep.Machine.Cores, rep.Machine.MemoryGiB, rep.Machine.Kernel, rep.Machine.Go)
	fmt.Fprintf(&b, "Servers: upstream `%s`, ours `%s`", rep.Versions["upstream"], rep.Versions["ours"])
	if len(rep.OursArgs) > 0 {
		fmt.Fprintf(&b, " with `%s`", strings.Join(rep.OursArgs, " "))
	}
	p := rep.Params
	fmt.Fprintf(&b, ".\n\nData: %d pods, %d nodes and Leases, %d namespaces, %d app label values (seeded into etcd in %.1fs).\n\n",
		p.Pods, p.Nodes, p.Namespaces, p.Apps, rep.SeedSeconds)
	if rep.tuned() {
		fmt.Fprintf(&b, "Upstream tuned: upstream's binary with `%s` applied (rows of %s only).\n\n", rep.Tuning, tunedScenarios)
		b.WriteString("| scenario | metric | unit | upstream | ours | ours/upstream | upstream tuned | ours/tuned |\n|---|---|---|---:|---:|---:|---:|---:|\n")
		for _, r := range rep.Rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, r.Metric, r.Unit, format(r.Upstream), format(r.Ours), formatRatio(r.Ratio), format(r.Tuned), formatRatio(r.TunedRatio))
		}
		return b.String()
	}
	b.WriteString("| scenario | metric | unit | upstream | ours | ours/upstream |\n|---|---|---|---:|---:|---:|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Scenario, r.Metric, r.Unit, format(r.Upstream), format(r.Ours), formatRatio(r.Ratio))
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
