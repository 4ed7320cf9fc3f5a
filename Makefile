# rik — build, test, regenerate.
GO      ?= go
BIN     := bin
CMDS    := controller scheduler riklet rikctl rik
PKG     := github.com/rik-org/rik
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X $(PKG)/internal/version.Version=$(VERSION)

.PHONY: all build dev deps test test-short bench proto vet fmt clean ui-screenshots

all: build

build: $(addprefix $(BIN)/,$(CMDS)) $(BIN)/rik-init

$(BIN)/%: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

# rik-init is the guest's PID 1: static, no cgo.
$(BIN)/rik-init: FORCE
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/rik-init

FORCE:

# rik dev: the whole cluster in one process. Extra flags: make dev DEV_FLAGS="...".
DEV_FLAGS ?=
dev: build
	$(BIN)/rik dev $(DEV_FLAGS)

# The Debian packages rik and its tests use (root).
DEPS := runc iptables nftables iproute2 kmod busybox-static e2fsprogs lz4 cpio xz-utils \
	qemu-system-x86 etcd-server curl ca-certificates chromium
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEPS)

# The whole suite. As root it runs the host tests (runc, iptables, netns,
# QEMU) for real; with CI=true a missing tool fails instead of skipping.
test: build
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
	rm -rf $(BIN)
