.PHONY: build test test-short lint bench demo

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
