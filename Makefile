# poolwatch's build. Every target works from a fresh Debian machine with Go:
# `make deps` installs what is missing and is run by the targets that need it.

# go1.26.8 carries known net/http and crypto/tls vulnerabilities; the module
# proxy serves this toolchain.
export GOTOOLCHAIN := go1.27.3

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
PKG       := github.com/poolwatch/poolwatch
BINARY    := poolwatch
VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.0.0)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILDDATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VPKG      := github.com/prometheus/common/version
LDFLAGS   := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) \
             -X $(VPKG).Branch=$(BRANCH) -X $(VPKG).BuildUser=poolwatch-make -X $(VPKG).BuildDate=$(BUILDDATE)

STATICCHECK_VERSION   := v0.8.2
# The chart's tests render it with the real helm; internal/launch names the
# same version (its Dependencies).
HELM_VERSION          := v3.22.0
GOLANGCI_LINT_VERSION := v2.15.0
# The servers the tests and the demo run (PostgreSQL 15 is checked by its
# path, see deps-apt); make test also needs chromium, for the screenshot of
# e2e/demo. internal/launch's Dependencies() names the same packages, and a
# test of internal/testenv keeps the two lists in step.
SERVER_APT_PACKAGES   := pgbouncer prometheus prometheus-alertmanager
# The real pool libraries of the application tests (internal/launch/apps):
# psycopg2 and psycopg_pool for Debian's python3, HikariCP with the JDBC
# driver and slf4j on a headless JDK, and Node.js (npm installs the pinned
# @opentelemetry packages into the test cache on first use). npm is
# checked by its binary (see deps-apt).
APP_APT_PACKAGES      := python3-psycopg2 python3-psycopg-pool default-jdk-headless libhikaricp-java \
                         libpostgresql-jdbc-java libslf4j-java nodejs
APT_PACKAGES          := $(SERVER_APT_PACKAGES) pgpool2 chromium $(APP_APT_PACKAGES)
# Coverage floor for the probe pool, in percent.
POOL_COVERAGE_MIN     := 95

.PHONY: all build test test-go test-unit test-e2e test-conformance check-fmt vet staticcheck coverage deps deps-apt deps-go deps-helm \
        lint mixin e2e bench fuzz clean docker docker-test deps-buildah vuln readme-flags founding-bug

all: build

## build: a static binary, ./poolwatch
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINARY) .

## deps: install what the tests need when it is missing (idempotent)
deps: deps-apt deps-go

# A package counts as present only when dpkg says "install ok installed": a
# removed package whose configuration files remain ("deinstall ok
# config-files") is still known to `dpkg -s`, but has no binaries.
deps-apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	test -x /usr/lib/postgresql/15/bin/postgres || missing="$$missing postgresql-15"; \
	case " $(APT_PACKAGES) " in *" nodejs "*) command -v npm >/dev/null 2>&1 || missing="$$missing npm";; esac; \
	if [ -n "$$missing" ]; then \
		echo ">> installing apt packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

deps-go:
	$(GO) mod download
	cd conformance && $(GO) mod download
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@$(MAKE) --no-print-directory deps-helm

# helm compiles for minutes from an empty build cache: installed once, only
# when missing or of another version (read from the binary's build info: a
# go-installed helm reports no patch version).
deps-helm:
	@$(GO) version -m $(GOBIN)/helm 2>/dev/null | grep -Eq '^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$(HELM_VERSION)[[:space:]]' || \
		{ echo ">> installing helm $(HELM_VERSION) (go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION))"; \
		  $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }

## test: the whole suite: format, vet, staticcheck, race tests against real servers, coverage, conformance, e2e
# A missing server or runtime fails the tests that need it, with how to
# install it; POOLWATCH_TEST_SKIP=NAME,... skips them instead (never in CI).
test: deps check-fmt vet staticcheck test-go

check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# conformance/ is a module of its own (the Kubernetes, Grafana and jsonnet
# types stay out of the product's go.mod and of make vuln): ./... does not
# reach it.
vet:
	$(GO) vet ./...
	cd conformance && $(GO) vet ./...

staticcheck:
	$(GOBIN)/staticcheck ./...
	cd conformance && $(GOBIN)/staticcheck ./...

# Two suites, each with its time budget (-timeout applies per package):
# the packages' own tests, against real PostgreSQL and PgBouncer, with the
# probe pool's coverage (checked by coverage); then e2e/, the binaries with
# real Prometheus, Alertmanager and Chromium, the demo's whole run included.
# The e2e suite runs even when the unit suite failed, so one run shows
# every failure; test-go fails if either did. The -timeout values guard
# against hangs, sized for a loaded machine: on 2 cores under
# `stress -c 2` plus a second test run, mixin's 61 promtool mutations
# alone took over 4 minutes (about 105 s unloaded).
UNIT_PKGS = $(shell $(GO) list ./... | grep -v /e2e/)
test-go:
	@unit=0; $(MAKE) --no-print-directory test-unit coverage || unit=$$?; \
	$(MAKE) --no-print-directory test-conformance || unit=$$?; \
	$(MAKE) --no-print-directory test-e2e || exit $$?; exit $$unit

test-unit:
	$(GO) test -race -count=1 -timeout 8m -coverprofile=coverage.out -coverpkg=./pool/ $(UNIT_PKGS)

test-e2e:
	$(GO) test -race -count=1 -timeout 9m ./e2e/...

# The shipped artifacts against the real tools' types: the Helm chart
# (helm template, k8s.io/api and prometheus-operator's monitoring/v1), the
# jsonnet mixin (go-jsonnet) and the dashboards (grafana-foundation-sdk).
test-conformance:
	cd conformance && $(GO) test -race -count=1 -timeout 8m ./...

coverage:
	@$(GO) tool cover -func=coverage.out | tail -1 | awk -v min=$(POOL_COVERAGE_MIN) \
		'{ sub("%","",$$3); printf "pool/ statement coverage: %s%% (minimum %s%%)\n", $$3, min; if ($$3+0 < min) exit 1 }'

## lint: golangci-lint v2 with the project's strict config
lint:
	@test -x $(GOBIN)/golangci-lint || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(GOBIN)/golangci-lint run ./...

## mixin: regenerate alerts/, dashboards/ and alertmanager.yml.example from mixin/
mixin:
	$(GO) run ./mixin/cmd/mixin -out .

## bench: benchmarks, results in bench/out/ (quoted in docs/performance.md)
bench: deps
	./bench/run.sh

## e2e: the end-to-end alerting test with the real Prometheus and Alertmanager (make test runs it too)
e2e: deps
	$(GO) test -race -count=1 -timeout 6m ./e2e/alerting/

## founding-bug: the acceptance series of the retry-loop leak, RUNS runs over the three routes (not in make test)
# Each run: PostgreSQL, PgBouncer, the leaky and the fixed psycopg2 app
# under the same faults, poolwatch, Prometheus (short rules) and
# Alertmanager; about 1 min per run on the direct and session routes, 2 on
# the transaction route. Without the race detector, as users run poolwatch.
# Prints every run and the counts (e2e/founding).
RUNS ?= 10
founding-bug: deps
	POOLWATCH_FOUNDING_RUNS=$(RUNS) $(GO) test -tags founding_series -count=1 -v -timeout 60m -run '^TestFoundingBug_Series$$' ./e2e/founding/

## fuzz: run each fuzz target for FUZZTIME (seed corpora run in make test)
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/

clean:
	rm -f $(BINARY) coverage.out

# ---------------------------------------------------------------------------
# Container image, after the convention of Prometheus' own images: the static
# binary of `make build` copied into a FROM scratch image with a CA bundle
# (see Dockerfile). buildah builds and runs it offline, as root, with the vfs
# storage driver (images live in buildah's default store,
# /var/lib/containers/storage) and chroot isolation.
DOCKER_IMAGE_NAME ?= poolwatch
DOCKER_IMAGE_TAG  ?= $(VERSION)
DOCKER_IMAGE      := $(DOCKER_IMAGE_NAME):$(DOCKER_IMAGE_TAG)
DOCKER_ARCH       ?= $(shell $(GO) env GOARCH)
CA_BUNDLE         ?= /etc/ssl/certs/ca-certificates.crt
BUILDAH           := buildah --storage-driver=vfs

deps-buildah:
	@command -v buildah >/dev/null 2>&1 || { \
		echo ">> installing apt packages: buildah"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq buildah >/dev/null; }

## docker: the container image $(DOCKER_IMAGE), built offline with buildah
# The context is staged under .build/ (ignored by git through its own
# .gitignore); .dockerignore keeps everything else out of it.
docker: build deps-buildah
	@test -r $(CA_BUNDLE) || { echo "CA bundle $(CA_BUNDLE) is missing: install ca-certificates"; exit 1; }
	@mkdir -p .build && printf '*\n' > .build/.gitignore
	install -D -m 0755 $(BINARY) .build/linux-$(DOCKER_ARCH)/poolwatch
	install -D -m 0644 $(CA_BUNDLE) .build/ca-certificates.crt
	$(BUILDAH) build --isolation=chroot --pull=never --build-arg OS=linux --build-arg ARCH=$(DOCKER_ARCH) \
		-t $(DOCKER_IMAGE) -f Dockerfile .

## docker-test: build the image and run --version and check-config inside it
docker-test: docker
	scripts/docker-test.sh $(DOCKER_IMAGE) $(VERSION) $(REVISION)

# ---------------------------------------------------------------------------
# Known vulnerabilities: govulncheck against an offline database built from
# the golang.org/x/vulndb module (its data/osv directory) with vulndb's own
# indexdb command. Both are pinned; bump VULNDB_VERSION to see newer reports.
# The built database (about 70 s to build on 2 cores, once) is cached
# outside the repository, keyed by its version, and reused until removed.
GOVULNCHECK_VERSION ?= v1.9.0
VULNDB_VERSION      ?= v0.0.0-20261105234957-e22db6528018
VULNDB_DIR          ?= $(abspath $(shell $(GO) env GOCACHE)/..)/poolwatch/vulndb-$(VULNDB_VERSION)

## vuln: govulncheck ./... against the offline vulnerability database
vuln:
	@test -x $(GOBIN)/govulncheck && $(GOBIN)/govulncheck -version 2>/dev/null | grep -q 'govulncheck@$(GOVULNCHECK_VERSION)' || \
		$(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	@GO="$(GO)" scripts/vulndb.sh $(VULNDB_VERSION) $(VULNDB_DIR)
	$(GOBIN)/govulncheck -db file://$(abspath $(VULNDB_DIR)) ./...

# ---------------------------------------------------------------------------
## readme-flags: regenerate the flags table in README.md from kong's model of main.go's command line
# (make test fails when the table has drifted: readme_test.go)
readme-flags:
	$(GO) test -count=1 -run '^TestREADME_FlagsTableIsTheCommandLinesModel$$' . -update

# ---------------------------------------------------------------------------
# The demo: PostgreSQL, PgBouncer, poolwatch, Prometheus (the short rules of
# mixin/) and Alertmanager on loopback under one temp dir, a scripted load
# that fills a pool and leaks a connection, and every page printed as it
# fires and resolves (internal/demo, on internal/launch). It installs the apt
# packages it needs through deps-apt and leaves nothing running. With
# SCREENSHOT=1 it also installs chromium and writes $(DEMO_SCREENSHOT) while
# PoolExhausted fires. e2e/demo runs the same program in make test.
SCREENSHOT      ?=
DEMO_SCREENSHOT ?= docs/img/prometheus-alerts.png
DEMO_WANTS_SHOT := $(filter 1 true yes,$(SCREENSHOT))
DEMO_APT_PACKAGES := $(SERVER_APT_PACKAGES) python3-psycopg2 $(if $(DEMO_WANTS_SHOT),chromium)

.PHONY: demo deps-demo

## deps-demo: install the demo's apt packages when missing (deps-apt, plus chromium for SCREENSHOT=1)
deps-demo:
	@$(MAKE) --no-print-directory deps-apt APT_PACKAGES="$(DEMO_APT_PACKAGES)"

## demo: watch a real pool fill up, leak and page; Ctrl-C stops it (SCREENSHOT=1: docs/img/prometheus-alerts.png)
demo: deps-demo build
	$(GO) run ./internal/demo -poolwatch ./$(BINARY) $(if $(DEMO_WANTS_SHOT),-screenshot $(DEMO_SCREENSHOT))
