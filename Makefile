# Every entry point of the project. `make run` and `make test` are the contract.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

BIN := _output/bin
KUBE_VERSION := $(shell go list -m -f '{{.Version}}' k8s.io/kubernetes)
KUBE_MINOR := $(word 2,$(subst ., ,$(KUBE_VERSION)))
# Our build number rides on the upstream version, so version checks
# (kubectl, kubeadm) see the upstream release.
BULWARK_BUILD := $(shell git rev-list --count HEAD 2>/dev/null || echo 0)
VERSION ?= $(KUBE_VERSION)-bulwark.$(BULWARK_BUILD)
GIT_COMMIT := $(shell git rev-parse --verify -q HEAD || echo unknown)
GIT_TREE_STATE := $(shell test -z "$$(git status --porcelain 2>/dev/null)" && echo clean || echo dirty)
# The commit date, not the time of the build: a rebuild of the same commit
# links the same binary.
BUILD_DATE := $(shell git log -1 --format=%cd --date=format:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)

version_ldflags = -X k8s.io/component-base/version.gitVersion=$(1) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR) \
  -X k8s.io/component-base/version.gitCommit=$(GIT_COMMIT) \
  -X k8s.io/component-base/version.gitTreeState=$(GIT_TREE_STATE) \
  -X k8s.io/component-base/version.buildDate=$(BUILD_DATE)

# Static binaries, as upstream ships them.
export CGO_ENABLED := 0
GO_BUILD := go build -trimpath

.PHONY: build
build: ## Build Bulwark's kube-apiserver and bulwarkctl into _output/bin.
	$(GO_BUILD) -ldflags "$(call version_ldflags,$(VERSION))" -o $(BIN)/kube-apiserver ./cmd/kube-apiserver
	$(GO_BUILD) -o $(BIN)/bulwarkctl ./cmd/bulwarkctl

.PHONY: upstream
upstream: ## Build unmodified upstream kube-apiserver from the same module graph.
	$(GO_BUILD) -ldflags "$(call version_ldflags,$(KUBE_VERSION))" -o $(BIN)/kube-apiserver-upstream k8s.io/kubernetes/cmd/kube-apiserver

.PHONY: etcd
etcd: ## Build etcd from the module graph (the version upstream's client uses).
	$(GO_BUILD) -o $(BIN)/etcd ./hack/etcd

.PHONY: binaries
binaries: build upstream etcd

KWOK_VERSION := v0.8.0

.PHONY: cluster-binaries
cluster-binaries: ## kube-scheduler and kube-controller-manager from the same module graph, and kwok, for a simulated cluster.
	$(GO_BUILD) -ldflags "$(call version_ldflags,$(KUBE_VERSION))" -o $(BIN)/kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
	$(GO_BUILD) -ldflags "$(call version_ldflags,$(KUBE_VERSION))" -o $(BIN)/kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
	# kwok's own module graph, from the Go module proxy.
	GOBIN=$(CURDIR)/$(BIN) go install -trimpath sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

KWOK_NODES ?= 100

.PHONY: kwok-cluster
kwok-cluster: build etcd cluster-binaries ## A simulated cluster on Bulwark: etcd, kube-scheduler, kube-controller-manager, kwok's KWOK_NODES nodes; kubeconfig in _output/kwok-cluster.
	go run ./hack/kwok-cluster -nodes=$(KWOK_NODES) $(KWOK_ARGS)

ENVTEST_ASSETS ?= _output/envtest
IMAGE_DIR ?= _output/image

.PHONY: image
image: build ## Container image of kube-apiserver (OCI layout and docker-archive) in _output/image, without a Docker daemon.
	go run ./hack/image -binary $(BIN)/kube-apiserver -out $(IMAGE_DIR) \
	  -version $(VERSION) -kube-version $(KUBE_VERSION) -created $(BUILD_DATE)

.PHONY: envtest-assets
envtest-assets: build etcd ## kube-apiserver and etcd (and kubectl, if built) in one directory, for KUBEBUILDER_ASSETS.
	mkdir -p $(ENVTEST_ASSETS)
	cp $(BIN)/kube-apiserver $(BIN)/etcd $(ENVTEST_ASSETS)/
	if [ -x $(BIN)/kubectl ]; then cp $(BIN)/kubectl $(ENVTEST_ASSETS)/; fi

.PHONY: run
run: build ## Start a local apiserver with embedded etcd; writes _output/local/admin.kubeconfig.
	hack/local-up.sh

.PHONY: test
test: test-unit test-integration ## All tests; what CI runs.

.PHONY: test-unit
test-unit:
	go test ./cmd/... ./internal/... ./pkg/... ./hack/...
	# The watch cache's shared values under the race detector: a write into
	# one while a reader serializes it fails the test.
	CGO_ENABLED=1 go test -race -run '^(TestShareValues|TestSharedValuesStayUnchanged)' ./pkg/cacher/

.PHONY: haproxy
haproxy: ## HAProxy from Debian's packages, the load balancer of the scale-out test.
	@command -v haproxy >/dev/null || (apt-get update -qq && apt-get install -y -qq haproxy >/dev/null) || \
	  (echo "haproxy is missing and could not be installed from Debian's packages" >&2; exit 1)

# What the integration tests run: the binaries, envtest's assets, the image.
INTEGRATION_ENV := BULWARK_BIN_DIR=$(CURDIR)/$(BIN) BULWARK_ENVTEST_ASSETS=$(CURDIR)/$(ENVTEST_ASSETS) BULWARK_IMAGE_DIR=$(CURDIR)/$(IMAGE_DIR)

# Integration tests start real etcd and apiserver processes: one package at
# a time, so two apiservers never compete for the two cores of a CI machine.
.PHONY: test-integration
test-integration: binaries cluster-binaries envtest-assets image haproxy
	$(INTEGRATION_ENV) go test -p 1 -timeout 40m ./test/integration/... $(TEST_ARGS)

# The reliability suite: the tests of docs/reliability.md at full size, their
# figures collected in _output/reliability.tsv, then the fuzzers.
RELIABILITY_TESTS := ^(TestFlood|TestReconnectStorm|TestWatchesResumeAcrossRestarts|TestEtcdMemberFailures|TestAbandonedListsReleaseTheirWork|TestBadInput|TestFiltersChangeNoAuthorization)$$
RELIABILITY_REPORT := $(CURDIR)/_output/reliability.tsv

.PHONY: reliability
reliability: binaries envtest-assets image haproxy ## Overload, faults, bad input at full size (about an hour); figures in _output/reliability.tsv.
	rm -f $(RELIABILITY_REPORT)
	BULWARK_RELIABILITY=full BULWARK_RELIABILITY_REPORT=$(RELIABILITY_REPORT) $(INTEGRATION_ENV) \
	  go test -p 1 -count 1 -timeout 90m ./test/integration -run '$(RELIABILITY_TESTS)' -v $(TEST_ARGS)
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)
	@echo "figures: $(RELIABILITY_REPORT)"

FUZZTIME ?= 1m

.PHONY: fuzz
fuzz: ## Fuzz the heartbeat classifier, the User-Agent limits parser and the filter chain.
	go test ./pkg/heartbeat -run '^$$' -fuzz FuzzClassify -fuzztime $(FUZZTIME)
	go test ./pkg/filters -run '^$$' -fuzz FuzzParseUserAgentLimits -fuzztime $(FUZZTIME)
	go test ./pkg/filters -run '^$$' -fuzz FuzzChain -fuzztime $(FUZZTIME)

.PHONY: update-kube-version
update-kube-version: ## Move to another Kubernetes release: make update-kube-version KUBE=1.37.3
	hack/update-kube-version.sh $(KUBE)

.PHONY: clean
clean:
	rm -rf _output/bin _output/bench

.PHONY: help
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

.PHONY: kubectl
kubectl: ## Build kubectl from the same module graph (optional; any kubectl works).
	$(GO_BUILD) -ldflags "$(call version_ldflags,$(KUBE_VERSION))" -o $(BIN)/kubectl k8s.io/kubernetes/cmd/kubectl

# Ours runs with the offending User-Agent throttled, upstream as configured by default.
BENCH_OURS_ARGS ?= --user-agent-limits-config=$(CURDIR)/hack/bench/throttle-flooder.yaml

.PHONY: bench
bench: binaries ## Side-by-side benchmark against upstream, quick: 50,000 pods, three runs in alternating order (about 15 minutes).
	go run ./hack/bench -ours-args="$(BENCH_OURS_ARGS)" $(BENCH_ARGS)

# The rows no feature of ours touches, each side a copy of our binary with the same flags:
# what the harness reads as a difference between two identical servers on this machine.
NOISE_SCENARIOS = ^(get pod|create pods|update pods|watch fan-out|list spec.nodeName)

.PHONY: bench-noise
bench-noise: binaries ## The bench's noise floor: ours against a copy of itself in upstream's place, five runs of the rows no feature touches.
	mkdir -p _output/bench-noise/bin
	cp _output/bin/kube-apiserver _output/bin/etcd _output/bench-noise/bin/
	cp _output/bin/kube-apiserver _output/bench-noise/bin/kube-apiserver-upstream
	go run ./hack/bench -bin-dir=_output/bench-noise/bin -out=_output/bench-noise -upstream-tuning= -plot=false -runs=5 \
	  -get-samples=5000 -writes=3000 -list-samples=200 -fanout-updates=30 -scenarios='$(NOISE_SCENARIOS)' $(BENCH_ARGS)

# Quick: 1,000 nodes and 10,000 pods; KWOK_BENCH_ARGS="-kwok-nodes=5000 -kwok-pods=50000" for the full size.
KWOK_BENCH_ARGS ?= -kwok-nodes=1000 -kwok-pods=10000

.PHONY: bench-kwok
bench-kwok: binaries cluster-binaries ## Side-by-side on a whole simulated cluster (kwok nodes, scheduler, controller manager): a Deployment workload, one run per server.
	go run ./hack/bench -ours-args="$(BENCH_OURS_ARGS)" -runs=1 -scenarios='^kwok cluster$$' -plot=false -out=_output/bench-kwok $(KWOK_BENCH_ARGS) $(BENCH_ARGS)

# 1,040,021 objects: 200,000 pods in 20,000 Deployments (with their ReplicaSets, Services,
# IPAddresses and EndpointSlices), 10,000 nodes and Leases, 100,000 ConfigMaps, 100,000 Secrets, 400,000 Events
# and 100,000 objects of a custom resource, which ours indexes by app label as it does pods:
# the server's default label indexes (cacher.DefaultLabelIndexes) plus that one.
MILLION_INDEXES = pods:app,pods:app.kubernetes.io/name,pods:app.kubernetes.io/instance,pods:k8s-app,pods:batch.kubernetes.io/job-name,widgets.bench.bulwark.io:app

.PHONY: bench-million
bench-million: binaries ## A million objects of every kind a large cluster holds: start, memory, label LISTs, heartbeats, restart with 10,000 watchers.
	go run ./hack/bench -ours-args="$(BENCH_OURS_ARGS) --watch-cache-label-indexes=$(MILLION_INDEXES)" -runs=1 -plot=false -out=_output/bench-million \
	  -pods=200000 -nodes=10000 -apps=2000 -workloads -configmaps=100000 -secrets=100000 -events=400000 -widgets=100000 \
	  -restart-watchers=10000 -list-samples=100 -heartbeat-duration=60s \
	  -scenarios='^(list label cluster-wide rv=""|list widgets label cluster-wide rv=""|heartbeats|restart)$$' $(BENCH_ARGS)

.PHONY: bench-full
bench-full: binaries ## The scale run: 200,000 pods, 10,000 nodes and watchers.
	go run ./hack/bench -ours-args="$(BENCH_OURS_ARGS)" -runs=1 -pods=200000 -nodes=10000 -restart-watchers=10000 -slow-watchers=10000 -slow-burst=5000 -watchers=1000 \
	  -list-samples=200 -get-samples=2000 -writes=2000 -fanout-updates=20 -heartbeat-duration=60s -flood-duration=60s -storm-clients=10000 -cost-requests=10000 $(BENCH_ARGS)
