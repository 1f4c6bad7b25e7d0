# kinactor. `make demo` runs a 3-node cluster demo against local servers;
# `make test` runs every test; `make chaos` runs the short chaos scenario
# (about 7 minutes, also in CI) and `make chaos-long` a 30-minute soak.
# `make test-ui` checks the status page in headless Chromium (installed from
# Debian's packages when /usr/bin/chromium is missing). All install the local
# servers first (deps).

GO ?= go

.PHONY: deps test test-ui chromium demo bench fmt vet local chaos chaos-long

deps:
	bash tools/localaws/install.sh
	$(GO) mod download

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 40m ./...

# The status page's browser test (test/ui, build tag ui) needs Debian's
# chromium; apt-get runs as root, or through sudo when there is one.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "test-ui: /usr/bin/chromium is missing and installing it needs root or sudo: run 'apt-get install chromium' as root" >&2; exit 1; fi; \
		echo "test-ui: installing chromium (apt-get)"; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
			{ echo "test-ui: installing chromium failed (see apt-get above)" >&2; exit 1; }; \
	fi
	@/usr/bin/chromium --version

test-ui: deps chromium
	$(GO) test -race -tags ui -count=1 ./test/ui/

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
