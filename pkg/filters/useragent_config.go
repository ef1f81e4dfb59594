package filters

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// The versioned kind of the --user-agent-limits-config file.
const (
	UserAgentLimitsAPIVersion = "bulwark.k8s.io/v1alpha1"
	UserAgentLimitsKind       = "UserAgentLimits"
)

// UserAgentLimitsConfig is the --user-agent-limits-config file:
//
//	apiVersion: bulwark.k8s.io/v1alpha1
//	kind: UserAgentLimits
//	rules:
//	- name: node-agent-lists
//	  userAgent: '^node-agent/'
//	  verbs: [list]
//	  resources: [pods]
//	  qps: 5
//	  burst: 10
//	  per: userAgent
type UserAgentLimitsConfig struct {
	APIVersion string          `yaml:"apiVersion" json:"apiVersion"`
	Kind       string          `yaml:"kind" json:"kind"`
	Rules      []UserAgentRule `yaml:"rules" json:"rules"`
}

// UserAgentRule limits the requests whose User-Agent matches. The first
// matching rule of the file decides; a request no rule matches is not limited.
type UserAgentRule struct {
	// Name appears in metrics and logs.
	Name string `yaml:"name" json:"name"`
	// UserAgent is a regular expression (RE2) matched against the whole
	// User-Agent header; anchor it with ^ and $ as needed.
	UserAgent string `yaml:"userAgent" json:"userAgent"`
	// Verbs, Resources and Namespaces narrow the rule; empty means any.
	// Verbs are the apiserver's (get, list, watch, create, update, patch,
	// delete, deletecollection); resources may name a subresource as
	// "pods/status"; "" in Namespaces means cluster-scoped requests.
	Verbs      []string `yaml:"verbs,omitempty" json:"verbs,omitempty"`
	Resources  []string `yaml:"resources,omitempty" json:"resources,omitempty"`
	Namespaces []string `yaml:"namespaces,omitempty" json:"namespaces,omitempty"`
	// QPS and Burst define the token bucket; QPS 0 blocks every matching request.
	QPS   float64 `yaml:"qps" json:"qps"`
	Burst int     `yaml:"burst,omitempty" json:"burst,omitempty"`
	// Per is "rule" (all matching clients share one bucket, the default) or
	// "userAgent" (each distinct User-Agent has its own bucket).
	Per string `yaml:"per,omitempty" json:"per,omitempty"`
}

// Bucket sharing of a rule.
const (
	PerRule      = "rule"
	PerUserAgent = "userAgent"
)

var knownVerbs = map[string]bool{
	"get": true, "list": true, "watch": true, "create": true, "update": true,
	"patch": true, "delete": true, "deletecollection": true, "proxy": true,
}

// ConfigError is a problem in the config file, at a line (0 if unknown).
type ConfigError struct {
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// compiledRule is a validated rule, ready to match.
type compiledRule struct {
	UserAgentRule
	userAgent                   *regexp.Regexp
	verbs, resources, namespace map[string]bool
}

// ParseUserAgentLimits parses and validates a config file. Every error names
// the line it is about; unknown fields are errors, so a typo cannot silently
// turn a limit off.
func ParseUserAgentLimits(data []byte) (*UserAgentLimitsConfig, []*compiledRule, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &ConfigError{Msg: "empty file"}
		}
		return nil, nil, yamlError(err)
	}
	var cfg UserAgentLimitsConfig
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&cfg); err != nil {
		return nil, nil, yamlError(err)
	}
	root := doc.Content[0]
	if cfg.APIVersion != UserAgentLimitsAPIVersion || cfg.Kind != UserAgentLimitsKind {
		return nil, nil, &ConfigError{Line: root.Line, Msg: fmt.Sprintf("apiVersion/kind must be %s/%s, got %q/%q",
			UserAgentLimitsAPIVersion, UserAgentLimitsKind, cfg.APIVersion, cfg.Kind)}
	}
	ruleNodes := ruleLines(root)
	names := map[string]bool{}
	rules := make([]*compiledRule, 0, len(cfg.Rules))
	for i, r := range cfg.Rules {
		line := 0
		if i < len(ruleNodes) {
			line = ruleNodes[i]
		}
		c, err := compile(r)
		if err != nil {
			return nil, nil, &ConfigError{Line: line, Msg: fmt.Sprintf("rule %q: %v", r.Name, err)}
		}
		if names[r.Name] {
			return nil, nil, &ConfigError{Line: line, Msg: fmt.Sprintf("rule %q: name used twice", r.Name)}
		}
		names[r.Name] = true
		rules = append(rules, c)
	}
	return &cfg, rules, nil
}

// ruleLines returns the line of each item of the top-level "rules" list.
func ruleLines(root *yaml.Node) []int {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "rules" {
			var lines []int
			for _, item := range root.Content[i+1].Content {
				lines = append(lines, item.Line)
			}
			return lines
		}
	}
	return nil
}

func compile(r UserAgentRule) (*compiledRule, error) {
	if r.Name == "" {
		return nil, errors.New("name is required")
	}
	if r.UserAgent == "" {
		return nil, errors.New("userAgent is required (use '.*' to match every client)")
	}
	re, err := regexp.Compile(r.UserAgent)
	if err != nil {
		return nil, fmt.Errorf("userAgent: %v", err)
	}
	if r.QPS < 0 {
		return nil, fmt.Errorf("qps must not be negative, got %v", r.QPS)
	}
	if r.Burst < 0 {
		return nil, fmt.Errorf("burst must not be negative, got %d", r.Burst)
	}
	if r.QPS > 0 && r.Burst == 0 {
		r.Burst = max(1, int(r.QPS))
	}
	switch r.Per {
	case "":
		r.Per = PerRule
	case PerRule, PerUserAgent:
	default:
		return nil, fmt.Errorf("per must be %q or %q, got %q", PerRule, PerUserAgent, r.Per)
	}
	for _, v := range r.Verbs {
		if !knownVerbs[v] {
			return nil, fmt.Errorf("unknown verb %q", v)
		}
	}
	return &compiledRule{
		UserAgentRule: r,
		userAgent:     re,
		verbs:         set(r.Verbs),
		resources:     set(r.Resources),
		namespace:     set(r.Namespaces),
	}, nil
}

func set(values []string) map[string]bool {
	if len(values) == 0 {
		return nil
	}
	s := make(map[string]bool, len(values))
	for _, v := range values {
		s[v] = true
	}
	return s
}

// yamlError turns a YAML decoding error into a ConfigError with its line.
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return lineError(te.Errors[0])
	}
	return lineError(err.Error())
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

func lineError(msg string) error {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscanf(m[1], "%d", &line)
		return &ConfigError{Line: line, Msg: m[2]}
	}
	return &ConfigError{Msg: msg}
}

// matches reports whether the rule applies to a request.
func (r *compiledRule) matches(userAgent, verb, resource, namespace string) bool {
	if r.verbs != nil && !r.verbs[verb] {
		return false
	}
	if r.resources != nil && !r.resources[resource] {
		return false
	}
	if r.namespace != nil && !r.namespace[namespace] {
		return false
	}
	return r.userAgent.MatchString(userAgent)
}
