// Command idleconns opens many keep-alive HTTP/1.1 connections to a proxy,
// sends one GET on each and reads its answer, then holds them all open and
// idle, as browser tabs do, until stdin closes. bench/idle.sh uses it to
// measure what an idle connection costs each proxy in memory.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "proxy `host:port`")
	n := flag.Int("n", 10000, "connections to open and hold")
	flag.Parse()
	conns := make([]net.Conn, 0, *n)
	start := time.Now()
	for i := 0; i < *n; i++ {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "idleconns: connection %d: %v\n", i+1, err)
			os.Exit(1)
		}
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
			fmt.Fprintf(os.Stderr, "idleconns: send on connection %d: %v\n", i+1, err)
			os.Exit(1)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			fmt.Fprintf(os.Stderr, "idleconns: answer on connection %d: %v %v\n", i+1, resp, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			fmt.Fprintf(os.Stderr, "idleconns: connection %d: the proxy closed it after one request\n", i+1)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	fmt.Printf("holding %d idle connections (opened in %s)\n", len(conns), time.Since(start).Round(time.Millisecond))
	io.Copy(io.Discard, os.Stdin) // until the script closes stdin
	for _, c := range conns {
		c.Close()
	}
}
