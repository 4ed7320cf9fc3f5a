# rik — build, test, regenerate.
GO      ?= go
BIN     := bin
CMDS    := controller scheduler riklet rikctl rik
PKG     := github.com/rik-org/rik
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X $(PKG)/internal/version.Version=$(VERSION)

.PHONY: all build dev deps test test-short bench proto vet fmt clean \
	ensure-dev ensure-test test-tools release ui-screenshots

all: build

build: $(addprefix $(BIN)/,$(CMDS)) $(BIN)/rik-init

# Every binary is static (no cgo): it runs on any Linux of its
# architecture, and rik-init as the guest's PID 1.
$(BIN)/%: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

# rik dev: the whole cluster in one process. Extra flags: make dev DEV_FLAGS="...".
DEV_FLAGS ?=
dev: build ensure-dev
	$(BIN)/rik dev $(DEV_FLAGS)

# The Debian packages rik and its tests use (root); prometheus brings
# promtool, which checks every component's /metrics.
DEPS := runc iptables nftables iproute2 kmod busybox-static e2fsprogs lz4 cpio xz-utils \
	qemu-system-x86 etcd-server curl ca-certificates prometheus bash \
	systemd file dpkg docker-compose \
	containernetworking-plugins chromium
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEPS)

# The whole suite. As root it runs the host tests (runc, iptables, netns,
# QEMU) for real; with CI=true a missing tool fails instead of skipping.
test: build ensure-test test-tools
	$(GO) vet ./...
	RIK_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 45m ./...

# Unit tests only: no root, no host tools.
test-short:
	$(GO) test -short -count=1 ./...

# The dashboard's screenshots in docs/, taken by its browser test.
ui-screenshots:
	RIK_UI_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestDashboard$$' ./test/ui

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I api/proto \
		--go_out=. --go_opt=module=$(PKG) \
		--go-grpc_out=. --go-grpc_opt=module=$(PKG) \
		api/proto/*.proto

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

clean:
	rm -rf $(BIN) $(DIST)

# What `make dev` and `make test` need, installed when missing (as root;
# quiet when all is there): the Debian packages of DEPS, a guest kernel
# (Debian's cloud kernel, unpacked, not installed, cached in
# /var/cache/rik/kernel; `rik dev` and the riklet's --kernel-path auto find
# it by themselves) and the example function's rootfs. A kernel fetched
# before into the tests' old place, /var/cache/rik-test/kernel, is used
# rather than fetched again.
KERNEL_DIRS := /var/cache/rik/kernel /var/cache/rik-test/kernel
export RIK_TEST_KERNEL_DIR ?= $(firstword $(foreach d,$(KERNEL_DIRS),$(if $(wildcard $(d)/boot/vmlinuz-*),$(d))) $(KERNEL_DIRS))
ensure-dev:
	@hack/ensure.sh deps $(DEPS)
	@hack/ensure.sh kernel $(KERNEL_DIRS)
	@hack/ensure.sh rootfs /var/lib/rik/rootfs/busybox-httpd.ext4
ensure-test:
	@hack/ensure.sh deps $(DEPS)
	@hack/ensure.sh kernel $(RIK_TEST_KERNEL_DIR)

# The release tool is a module of its own (tools/go.mod), out of ./...
test-tools:
	cd tools && $(GO) vet ./... && $(GO) test -count=1 ./...

# make release: static binaries cross-compiled per architecture in
# $(DIST)/linux-<arch>/, then per architecture a tar.gz and a .deb, and
# SHA256SUMS (tools/release). Reproducible: files carry the last commit's time.
RELEASE_ARCHES ?= amd64 arm64
DIST ?= dist
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
release:
	rm -rf $(DIST)
	@for a in $(RELEASE_ARCHES); do \
		GOOS=linux GOARCH=$$a $(MAKE) --no-print-directory build BIN=$(DIST)/linux-$$a || exit 1; \
	done
	cd tools && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./release \
		-root $(CURDIR) -dist $(CURDIR)/$(DIST) -version $(VERSION) -arch "$(RELEASE_ARCHES)"
	@echo; ls -l $(DIST); echo; file $(DIST)/linux-*/*
