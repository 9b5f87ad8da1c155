.PHONY: build test test-short lint bench demo deb

build:
	go build -o bin/baton ./cmd/baton

test:
	go test -race -count=1 ./...

test-short:
	go test -race -count=1 -short ./...

lint:
	gofmt -l . && go vet ./...

demo:
	go run ./cmd/baton demo

bench:
	go test -run '^$$' -bench . -benchmem ./proxy/
	./bench/speed.sh

# The Debian package: dist/baton_<version>_<arch>.deb (packaging/nfpm.yaml).
# VERSION defaults to the latest v* tag, else 0.1.0~dev+<commit>; baton
# version prints it, with the commit and Go version from the build info.
NFPM ?= go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-/+/g' | grep . || echo "0.1.0~dev+$$(git rev-parse --short HEAD)")
ARCH ?= $(shell go env GOARCH)

deb:
	mkdir -p dist
	CGO_ENABLED=0 GOARCH=$(ARCH) go build -trimpath -buildvcs=true -ldflags "-s -w -X main.version=$(VERSION)" -o dist/baton ./cmd/baton
	VERSION=$(VERSION) ARCH=$(ARCH) $(NFPM) package --config packaging/nfpm.yaml --packager deb --target dist/
	@ls dist/*.deb
