# kinactor. `make demo` runs a 3-node cluster demo against local servers;
# `make test` runs every test; `make chaos` runs the short chaos scenario
# (about 7 minutes, also in CI) and `make chaos-long` a 30-minute soak. All
# install the local servers first (deps).

GO ?= go

.PHONY: deps test demo bench fmt vet local chaos chaos-long

deps:
	bash tools/localaws/install.sh
	$(GO) mod download

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 40m ./...

chaos: deps
	$(GO) run ./cmd/kinactor chaos --scenario test/chaos/short.json

chaos-long: deps
	$(GO) run ./cmd/kinactor chaos --scenario test/chaos/long.json

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
