package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jvmApp is a small app on the JDK's built-in HTTP server: the kind of app
// whose thread-group leader turns zombie a few milliseconds before its other
// threads have let go of the listening socket (issue 13, item 7).
const jvmApp = `import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

public class App {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String version = System.getenv("BATON_VERSION");
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 128);
        server.createContext("/", exchange -> {
            byte[] body = (version + "\n").getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("X-App-Version", version);
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }
}
`

// buildJVMApp compiles jvmApp into a jar in a temporary directory.
func buildJVMApp(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"javac", "jar", "java"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run .ci/install-jdk.sh (%v)", tool, err)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "App.java"), []byte(jvmApp), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("javac", "-d", dir, filepath.Join(dir, "App.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	jar := filepath.Join(dir, "app.jar")
	if out, err := exec.Command("jar", "--create", "--file", jar, "--main-class", "App", "-C", dir, "App.class").CombinedOutput(); err != nil {
		t.Fatalf("jar: %v\n%s", err, out)
	}
	return jar
}

// waitAccepting waits until something accepts connections on addr.
func waitAccepting(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing accepts on %s after %s: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJVMDeployAfterKillMidDeploy is issue 13's item 7 with a real JVM app:
// baton is killed with SIGKILL while a deploy's new instance starts, is
// restarted, and the next deploy must stop the instance left on the idle
// colour and succeed, every time. Before the fix the adopted JVM's zombie
// thread-group leader counted as gone while its other threads still held
// the port, and the deploy failed with "already in use by a process baton
// did not start" in about one cycle in four.
func TestJVMDeployAfterKillMidDeploy(t *testing.T) {
	jar := buildJVMApp(t)
	// C1 only and a small heap keep the JVM's start short.
	b := newBaton(t, "--run", "exec java -Xmx64m -XX:TieredStopAtLevel=1 -jar {artifact} {port}", "--drain-timeout", "2s", "--health-passes", "1")
	b.start()
	_, last, out, code := b.deploy("--artifact", jar, "--version", "v0")
	if code != 0 {
		t.Fatalf("deploy v0 exited %d:\n%s", code, out)
	}
	t.Logf("v0 (pid %d) serves", last.Deploy.PID)

	const cycles = 5 // the minimum; each takes about 4s
	for n := 1; n <= cycles; n++ {
		live := mustStatus(t, b).Live
		idle := map[string]string{"blue": b.green, "green": b.blue}[live]
		interrupted := "v" + strconv.Itoa(2*n-1)
		result := bgDeploy(b, "--artifact", jar, "--version", interrupted)
		var pid int
		deadline := time.Now().Add(20 * time.Second)
		for pid == 0 {
			if st := readState(t, b.state); st.Pending != nil && st.Pending.Instance != nil {
				pid = st.Pending.Instance.PID
				killGroup(t, pid)
			}
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: the state never recorded the launched instance", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.sigkill() // mid-deploy: the new JVM is still starting
		<-result
		b.start()
		// The left-over JVM goes on starting and takes the idle port: the
		// case where the next deploy must stop it and wait for the port.
		waitAccepting(t, idle, 20*time.Second)

		next := "v" + strconv.Itoa(2*n)
		lines, last, out, code := b.deploy("--artifact", jar, "--version", next)
		if code != 0 {
			t.Fatalf("cycle %d: deploy %s after the restart exited %d (steps %q):\n%s\nbaton's log:\n%s", n, next, code, steps(lines), out, b.proc.out.String())
		}
		if !strings.Contains(out, "stopped the previous") {
			t.Errorf("cycle %d: deploy %s did not stop the interrupted %s (pid %d):\n%s", n, next, interrupted, pid, out)
		}
		if _, _, v := get(t, b.http, "/"); v != next {
			t.Fatalf("cycle %d: served by %q; want %s", n, v, next)
		}
		wantInstances(t, b, map[int]string{last.Deploy.PID: next})
	}
}
