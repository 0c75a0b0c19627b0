# vmcompose: `make demo` sets up this host and runs the hello example;
# `make test` runs every test.

GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Fuzz budgets are counts, not durations: with Go 1.26 a duration that ends
# while a worker is busy fails the run with "context deadline exceeded" and
# no failing input (golang/go#75804, fixed in Go 1.27). 30000 runs take
# about 20 s here.
FUZZTIME ?= 30000x

.PHONY: build setup demo test bench lint clean

# vmcompose finds the guest init, vminit, beside itself.
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/vmcompose ./cmd/vmcompose
	CGO_ENABLED=0 $(GO) build -ldflags '-s -w' -o bin/vminit ./cmd/vminit

# Debian packages (QEMU, e2fsprogs, busybox-static, mmdebstrap, ...), the guest
# kernel fetched into the store and the builder image made there.
setup: build
	scripts/setup
	bin/vmcompose setup --builder

demo: setup
	scripts/demo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...

# One package at a time: the VM tests of two packages at once oversubscribe
# two cores and turn their timeouts into flakes.
test: setup lint
	$(GO) test -p 1 -timeout 30m ./...
	$(GO) test -run '^$$' -fuzz FuzzLoadPlan -fuzztime $(FUZZTIME) ./project
	$(GO) test -run '^$$' -fuzz FuzzBuild -fuzztime $(FUZZTIME) ./oci/rootfs

# Benchmarks print their figures and, where a target compares with a
# baseline, the ratio measured in the same run. One BenchmarkStorage
# iteration takes 2 to 3 minutes under TCG (10 000 files over virtiofs
# dominate): it runs once; one BenchmarkBuild iteration (a cold build
# with the builder's boot, then two more) about a minute: it runs 3 times.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 10x -timeout 60m ./planner
	$(GO) test -run '^$$' -bench . -skip 'BenchmarkStorage|BenchmarkBuild' -benchtime 5x -timeout 60m ./project ./cmd/vmcompose
	$(GO) test -run '^$$' -bench BenchmarkStorage -benchtime 1x -timeout 30m ./cmd/vmcompose
	$(GO) test -run '^$$' -bench BenchmarkBuild -benchtime 3x -timeout 30m ./cmd/vmcompose
	$(GO) test -run '^$$' -bench . -benchtime 5x -timeout 60m ./oci/...
	$(GO) test -run '^$$' -bench . -benchtime 7x -timeout 60m ./vm/qemu
	$(GO) test -run '^$$' -bench . -benchtime 200x -timeout 10m ./watch

clean:
	rm -rf bin
