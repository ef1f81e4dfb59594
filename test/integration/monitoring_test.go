package integration

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// Shipped with the docs: a Grafana dashboard and Prometheus alerting rules.
const (
	dashboardFile = "../../docs/monitoring/bulwark-dashboard.json"
	alertsFile    = "../../docs/monitoring/bulwark-alerts.yaml"
)

// metricName finds the metrics an expression queries.
var metricName = regexp.MustCompile(`\b(?:bulwark|apiserver)_[a-z0-9_]+`)

// onlyAfterFirstMinute are metrics that a server shows once it has run a
// full minute: the top talkers report the last complete minute.
var onlyAfterFirstMinute = map[string]bool{"bulwark_user_agent_top_requests": true}

// monitoringQueries reads the dashboard and the alerting rules, checks their
// shape, and returns every PromQL expression in them.
func monitoringQueries(t *testing.T) []string {
	t.Helper()
	var dashboard struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}

	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert       string
				Expr        string
				For         string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	if data, err = os.ReadFile(alertsFile); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if _, err := time.ParseDuration(r.For); err != nil || r.Alert == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %q: for %q (%v), summary %q", r.Alert, r.For, err, r.Annotations["summary"])
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("alert %q: severity %q", r.Alert, r.Labels["severity"])
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if len(dashboard.Panels) < 8 || len(exprs) < 15 {
		t.Fatalf("%d panels and %d queries in all: the files were not read as meant", len(dashboard.Panels), len(exprs))
	}
	return exprs
}

// checkMonitoringQueries fails the test for every metric the dashboard or
// the alerts query that metricsText (a server's /metrics) does not have.
func checkMonitoringQueries(t *testing.T, metricsText string) {
	t.Helper()
	checked := 0
	for _, expr := range monitoringQueries(t) {
		for _, name := range metricName.FindAllString(expr, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if onlyAfterFirstMinute[base] {
				continue
			}
			if !strings.Contains(metricsText, "\n# TYPE "+base+" ") {
				t.Errorf("query %q: no metric %s on /metrics", expr, base)
			}
			checked++
		}
	}
	t.Logf("%d metric references checked", checked)
}
