# exo-sendmail: the two commands a new user needs are `make demo` and `make test`.
GO        ?= go
BIN       := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION   ?= $(shell packaging/version.sh 2>/dev/null || echo dev)

.PHONY: build test check-go demo packages lint-packages package-test bench clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/sendmail ./cmd/sendmail
	ln -sf sendmail $(BIN)/mailq
	ln -sf sendmail $(BIN)/newaliases
	ln -sf sendmail $(BIN)/exo-sendmail

# The whole test suite: what .ci/run runs in CI. The packaging proof
# installs the .deb on this machine only when CI=true (see package-test).
test: check-go
	.ci/package-test.sh

check-go:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -race -count=1 ./...

# Build, start the Exchange Online emulator, send a message the way PHP
# does, run the queue and show what the mailbox received.
demo: build
	scripts/demo.sh

packages:
	packaging/build.sh

lint-packages: packages
	packaging/lint.sh

# Installs the .deb on THIS machine (root, a throw-away system) and checks
# the privilege model, delivery, upgrade and purge.
package-test:
	.ci/package-test.sh --install

bench: build
	$(GO) run ./bench/enqueue
	$(GO) run ./bench/delivery

clean:
	rm -rf $(BIN) dist demo
