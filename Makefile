# The two commands the README promises: `make local` and `make test`. Each installs what it needs.
GO ?= go
# pgtide version prints these even where the toolchain stamps no VCS information.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: local test build deps test-deps bench-deps bench vet chaos

## local: start a local primary + 2 replicas with pgtide in front (Ctrl-C stops and cleans up)
local: deps
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/pgtide local

## test: vet, format check and the whole test suite under the race detector
test: test-deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## build: the binary in bin/pgtide
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/pgtide ./cmd/pgtide

deps:
	@scripts/ensure-postgres.sh

test-deps:
	@scripts/ensure-postgres.sh --promtool --chromium --jdbc

bench-deps:
	@scripts/ensure-postgres.sh --pgbouncer

## chaos: the fault-injection suite against pgtide and then PgBouncer (about 4 minutes); prints
## the tables. CHAOSFLAGS="-record RELIABILITY.md" also writes them there; see go run ./bench/chaos -h
CHAOSFLAGS ?=
chaos: bench-deps
	$(GO) run ./bench/chaos $(CHAOSFLAGS)

## fuzz: every fuzz target in turn for FUZZTIME each (default 30s); new failing inputs are kept in
## the package's testdata/fuzz, to be committed with their fix
FUZZTIME ?= 30s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' internal cmd); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done
