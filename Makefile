# kinactor. `make demo` runs a 3-node cluster demo against local servers;
# `make test` runs every test. Both install the local servers first (deps).

GO ?= go

.PHONY: deps test demo bench fmt vet local

deps:
	bash tools/localaws/install.sh
	$(GO) mod download

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

demo: deps
	$(GO) run ./cmd/kinactor demo

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 3x ./stream/ ./test/...

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

local:
	$(GO) run ./cmd/kinactor local
