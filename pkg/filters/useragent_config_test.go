package filters

import (
	"errors"
	"strings"
	"testing"
)

const validConfig = `apiVersion: bulwark.k8s.io/v1alpha1
kind: UserAgentLimits
rules:
- name: block-flooder
  userAgent: '^flooder/'
  qps: 0
- name: node-agent-lists
  userAgent: '^node-agent/'
  verbs: [list]
  resources: [pods]
  qps: 5
  burst: 10
  per: userAgent
`

func TestParseUserAgentLimits(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		wantLine int
		wantErr  string
	}{
		{name: "valid", config: validConfig},
		{name: "no rules", config: "apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\n"},
		{name: "empty", config: "", wantErr: "empty file"},
		{name: "wrong kind", config: "apiVersion: v1\nkind: ConfigMap\n", wantLine: 1, wantErr: "apiVersion/kind must be"},
		{name: "not yaml", config: "apiVersion: [\n", wantLine: 1, wantErr: "did not find expected node content"},
		{name: "unknown field", config: strings.Replace(validConfig, "  burst: 10", "  brust: 10", 1), wantLine: 12, wantErr: "field brust not found"},
		{name: "bad regexp", config: strings.Replace(validConfig, "'^flooder/'", "'^(flooder'", 1), wantLine: 4, wantErr: `rule "block-flooder": userAgent: error parsing regexp`},
		{name: "negative qps", config: strings.Replace(validConfig, "qps: 5", "qps: -5", 1), wantLine: 7, wantErr: "qps must not be negative"},
		{name: "qps not a number", config: strings.Replace(validConfig, "qps: 5", "qps: fast", 1), wantLine: 11, wantErr: "cannot unmarshal"},
		{name: "unknown verb", config: strings.Replace(validConfig, "[list]", "[lsit]", 1), wantLine: 7, wantErr: `unknown verb "lsit"`},
		{name: "bad per", config: strings.Replace(validConfig, "per: userAgent", "per: client", 1), wantLine: 7, wantErr: "per must be"},
		{name: "duplicate name", config: strings.Replace(validConfig, "node-agent-lists", "block-flooder", 1), wantLine: 7, wantErr: "name used twice"},
		{name: "missing user agent", config: strings.Replace(validConfig, "  userAgent: '^flooder/'\n", "", 1), wantLine: 4, wantErr: "userAgent is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rules, err := ParseUserAgentLimits([]byte(tt.config))
			if tt.wantErr == "" && tt.wantLine == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error = %v (%T), want a ConfigError", err, err)
			}
			if ce.Line != tt.wantLine || !strings.Contains(ce.Msg, tt.wantErr) {
				t.Fatalf("error = %q at line %d, want %q at line %d", ce.Msg, ce.Line, tt.wantErr, tt.wantLine)
			}
			if rules != nil {
				t.Fatal("rules returned with an error")
			}
		})
	}
}

func TestRuleDefaults(t *testing.T) {
	_, rules, err := ParseUserAgentLimits([]byte("apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules:\n- name: r\n  userAgent: x\n  qps: 2.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := rules[0]; r.Per != PerRule || r.Burst != 2 {
		t.Errorf("defaults: per=%q burst=%d, want per=rule burst=2", r.Per, r.Burst)
	}
}

// FuzzParseUserAgentLimits checks that no input panics and that a config
// either parses into rules or fails with a ConfigError.
func FuzzParseUserAgentLimits(f *testing.F) {
	f.Add([]byte(validConfig))
	f.Add([]byte("apiVersion: bulwark.k8s.io/v1alpha1\nkind: UserAgentLimits\nrules: []\n"))
	f.Add([]byte("rules:\n- {name: a, userAgent: '(', qps: -1}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, rules, err := ParseUserAgentLimits(data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, not a ConfigError", err, err)
			}
			return
		}
		if len(rules) != len(cfg.Rules) {
			t.Fatalf("%d rules compiled from %d", len(rules), len(cfg.Rules))
		}
		for _, r := range rules {
			if r.QPS < 0 || r.Burst < 0 || (r.Per != PerRule && r.Per != PerUserAgent) {
				t.Fatalf("invalid rule accepted: %+v", r.UserAgentRule)
			}
		}
	})
}
