package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// Latencies are client-side request durations of one scenario and server.
type Latencies []time.Duration

// Quantile returns the q-quantile (nearest rank); zero without samples.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(idx, 0)]
}

// histogram is the cumulative bucket counts of one histogram, summed over
// the label sets a filter selected.
type histogram map[float64]float64

// scrapeMetrics reads the metric families of the server's /metrics.
func scrapeMetrics(ctx context.Context, cfg *rest.Config) (map[string]*dto.MetricFamily, error) {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	resp, err := get(ctx, client, cfg.Host+"/metrics", "text/plain", "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// scrapeCounter returns the sum of a counter's series whose labels include
// match; 0 when the server has none.
func scrapeCounter(ctx context.Context, cfg *rest.Config, name string, match map[string]string) (float64, error) {
	families, err := scrapeMetrics(ctx, cfg)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		matches := true
		for k, v := range match {
			matches = matches && label(m, k) == v
		}
		if matches {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum, nil
}

// scrapeRequestDurations reads apiserver_request_duration_seconds from
// /metrics, keyed by "VERB resource".
func scrapeRequestDurations(ctx context.Context, cfg *rest.Config) (map[string]histogram, error) {
	return scrapeHistograms(ctx, cfg, "apiserver_request_duration_seconds", func(m *dto.Metric) string {
		key := label(m, "verb") + " " + label(m, "resource")
		if sub := label(m, "subresource"); sub != "" {
			key += "/" + sub
		}
		return key
	})
}

// scrapeHistograms reads a histogram family from /metrics, its series
// summed by key (series keyed "" are left out).
func scrapeHistograms(ctx context.Context, cfg *rest.Config, name string, key func(*dto.Metric) string) (map[string]histogram, error) {
	families, err := scrapeMetrics(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out := map[string]histogram{}
	for _, m := range families[name].GetMetric() {
		k := key(m)
		if k == "" {
			continue
		}
		h := out[k]
		if h == nil {
			h = histogram{}
			out[k] = h
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) {
				h[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
		h[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
	}
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// serverQuantile is the q-quantile of the requests counted between two
// scrapes, interpolated within buckets as Prometheus' histogram_quantile
// does. It returns NaN when no request was counted.
func serverQuantile(before, after histogram, q float64) float64 {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	counts := make([]float64, len(bounds))
	for i, b := range bounds {
		counts[i] = after[b] - before[b]
	}
	total := counts[len(counts)-1]
	if len(bounds) < 2 || total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for i, b := range bounds {
		if counts[i] >= rank {
			if math.IsInf(b, 1) {
				return bounds[i-1]
			}
			return lower + (b-lower)*(rank-prev)/(counts[i]-prev)
		}
		lower, prev = b, counts[i]
	}
	return bounds[len(bounds)-2]
}

// Usage is a process's resource use over a scenario.
type Usage struct {
	CPUSeconds float64
	PeakRSSMiB float64
}

// usageSampler follows a process's CPU time and resident memory from /proc.
type usageSampler struct {
	pid      int
	startCPU float64
	stop     chan struct{}
	done     sync.WaitGroup
	peakRSS  float64
}

const clockTicks = 100 // USER_HZ on Linux

func startUsage(pid int) *usageSampler {
	s := &usageSampler{pid: pid, stop: make(chan struct{})}
	s.startCPU, _ = cpuSeconds(pid)
	s.peakRSS, _ = rssMiB(pid)
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if rss, err := rssMiB(pid); err == nil && rss > s.peakRSS {
					s.peakRSS = rss
				}
			}
		}
	}()
	return s
}

func (s *usageSampler) Stop() Usage {
	close(s.stop)
	s.done.Wait()
	cpu, _ := cpuSeconds(s.pid)
	return Usage{CPUSeconds: cpu - s.startCPU, PeakRSSMiB: s.peakRSS}
}

func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may contain spaces, in ")".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks, nil
}

// processUsage is a process's CPU time and peak RSS since it started.
func processUsage(pid int) (Usage, error) {
	cpu, err := cpuSeconds(pid)
	if err != nil {
		return Usage{}, err
	}
	peak, err := statusMiB(pid, "VmHWM:")
	return Usage{CPUSeconds: cpu, PeakRSSMiB: peak}, err
}

func rssMiB(pid int) (float64, error) { return statusMiB(pid, "VmRSS:") }

// statusMiB reads a memory field of /proc/<pid>/status.
func statusMiB(pid int, field string) (float64, error) {
	return procFileMiB(fmt.Sprintf("/proc/%d/status", pid), field)
}

// memoryAvailable is the machine's available and total memory, in MiB.
func memoryAvailable() (available, total float64, err error) {
	if available, err = procFileMiB("/proc/meminfo", "MemAvailable:"); err != nil {
		return 0, 0, err
	}
	total, err = procFileMiB("/proc/meminfo", "MemTotal:")
	return available, total, err
}

// procFileMiB reads a "field: N kB" line of a /proc file.
func procFileMiB(path, field string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in %s", field, path)
}
