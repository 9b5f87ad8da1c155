package launcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/batonproxy/baton/internal/sshtest"
)

// The SSH tests run a real OpenSSH sshd on 127.0.0.1 (package sshtest). The
// "remote" host is this machine, so the tests can reach the app's port and
// see its process and files directly.

func newSSH(t *testing.T, cfg SSHConfig) *SSH {
	t.Helper()
	l, err := NewSSH(cfg)
	if err != nil {
		t.Fatalf("NewSSH: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestSSHUploadsStartsAndStopsTheApp(t *testing.T) {
	srv := sshtest.Start(t)
	remoteDir := filepath.Join(t.TempDir(), "remote")
	cfg := SSHConfig{Target: srv.Target, KeyFile: srv.UserKeyFile, KnownHosts: srv.KnownHosts,
		Command: "{artifact} --port {port} --version {version}", Dir: remoteDir}
	l := newSSH(t, cfg)
	spec := testSpec(t, appBin, "v2")
	var progress []string
	spec.Progress = func(msg string) { progress = append(progress, msg) }
	inst := start(t, l, spec)
	rec := inst.Record()
	waitHealthy(t, inst, spec.Port)

	if rec.Launcher != "ssh" || rec.Host != srv.Target || rec.PID <= 0 {
		t.Errorf("record %+v; want launcher ssh on %s with a pid", rec, srv.Target)
	}
	wantArtifact := filepath.Join(remoteDir, "releases", "v2", "app")
	if rec.Artifact != wantArtifact {
		t.Errorf("artifact at %q; want %q", rec.Artifact, wantArtifact)
	}
	src, _ := os.Stat(appBin)
	if fi, err := os.Stat(wantArtifact); err != nil || fi.Size() != src.Size() || fi.Mode()&0o100 == 0 {
		t.Errorf("uploaded artifact: %v; want an executable of %d bytes", err, src.Size())
	}
	// Nothing the launcher writes on the host is for other users there
	// (issue 13, item 6): the SSH login user is the app's user.
	wantMode(t, filepath.Join(remoteDir, "releases"), 0o700, -1)
	wantMode(t, filepath.Dir(wantArtifact), 0o700, -1)
	wantMode(t, wantArtifact, 0o700, -1)
	wantMode(t, filepath.Dir(rec.Log), 0o700, -1)
	wantMode(t, rec.Log, 0o600, -1)
	entries, _ := os.ReadDir(filepath.Dir(wantArtifact))
	if len(entries) != 1 {
		t.Errorf("release dir holds %d entries; want only the artifact (no temp file left)", len(entries))
	}
	if len(progress) != 1 || !strings.Contains(progress[0], "uploaded app") {
		t.Errorf("progress %q; want one 'uploaded' note", progress)
	}
	waitExec(t, rec.PID, "app") // the recorded PID is the app's own
	if pgid, _ := syscall.Getpgid(rec.PID); pgid != rec.PID {
		t.Errorf("pgid %d; want the app leading its own group (setsid)", pgid)
	}

	// The app outlives the SSH connection; the launcher reconnects.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, inst, spec.Port)
	if alive, err := inst.Alive(context.Background()); !alive || err != nil {
		t.Fatalf("Alive after reconnect = %v, %v", alive, err)
	}
	tail, err := inst.LogTail(context.Background(), 5)
	if err != nil || !strings.Contains(tail, "listening on") {
		t.Errorf("log tail %q, %v; want the app's 'listening' line", tail, err)
	}

	// A restarted baton adopts the instance through a new launcher and
	// stops it by PID.
	adopted, err := newSSH(t, cfg).Adopt(rec)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := adopted.Stop(context.Background(), syscall.SIGTERM, 5*time.Second)
	if err != nil || !strings.Contains(desc, "exited") {
		t.Fatalf("Stop = %q, %v", desc, err)
	}
	if Alive(rec.PID) {
		t.Fatal("app alive after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := inst.Wait(ctx); err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Wait = %v; want an 'exited' error", err)
	}
	localRec := rec
	localRec.Host, localRec.Launcher = "", "local"
	if _, err := l.Adopt(localRec); !errors.Is(err, ErrNotAdoptable) {
		t.Errorf("SSH Adopt of a local record: %v; want ErrNotAdoptable", err)
	}
}

func TestSSHEarlyExitAndKillAfterGrace(t *testing.T) {
	srv := sshtest.Start(t)
	base := SSHConfig{Target: srv.Target, KeyFile: srv.UserKeyFile, KnownHosts: srv.KnownHosts, Dir: t.TempDir()}

	crash := base
	crash.Command = `echo "FATAL: no database on port $PORT" >&2; exit 3`
	spec := testSpec(t, "", "v1")
	inst := start(t, newSSH(t, crash), spec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := inst.Wait(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Wait = %v; want the exit seen within 5s", err)
	}
	if tail, _ := inst.LogTail(context.Background(), 10); !strings.Contains(tail, "FATAL: no database on port") {
		t.Errorf("log tail lacks the app's output:\n%s", tail)
	}

	stuck := base
	stuck.Command = "trap '' TERM; exec sleep 30"
	inst = start(t, newSSH(t, stuck), testSpec(t, "", "v1"))
	waitExec(t, inst.Record().PID, "sleep")
	t0 := time.Now()
	desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 300*time.Millisecond)
	if err != nil || !strings.Contains(desc, "killed") {
		t.Fatalf("Stop = %q, %v; want killed after the grace", desc, err)
	}
	if time.Since(t0) < 300*time.Millisecond || Alive(inst.Record().PID) {
		t.Errorf("killed after %s, alive %v", time.Since(t0), Alive(inst.Record().PID))
	}
}

func TestSSHRefusesUnknownHostKeyUnlessInsecureIsAsked(t *testing.T) {
	srv := sshtest.Start(t)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	// Keys for other hosts only.
	line := sshtest.KnownHostsLine("127.0.0.1:1", sshtest.NewHostKey(t)) + "\n"
	if err := os.WriteFile(knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	remoteDir := filepath.Join(t.TempDir(), "remote")
	cfg := SSHConfig{Target: srv.Target, KeyFile: srv.UserKeyFile, KnownHosts: knownHosts,
		Command: "exec sleep 30", Dir: remoteDir}
	_, err := newSSH(t, cfg).Start(context.Background(), testSpec(t, "", "v1"))
	if !errors.Is(err, ErrHostKeyUnknown) {
		t.Fatalf("Start against an unknown host: %v; want ErrHostKeyUnknown", err)
	}
	for _, want := range []string{"unknown", ssh.FingerprintSHA256(srv.HostKey), knownHosts, "[127.0.0.1]:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := os.Stat(remoteDir); err == nil {
		t.Error("the launcher created files on a host it did not trust")
	}

	cfg.InsecureIgnoreHostKey = true
	inst := start(t, newSSH(t, cfg), testSpec(t, "", "v1"))
	if desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 5*time.Second); err != nil || !strings.Contains(desc, "exited") {
		t.Fatalf("with InsecureIgnoreHostKey: Stop = %q, %v", desc, err)
	}
}

func TestSSHRefusesChangedHostKey(t *testing.T) {
	srv := sshtest.Start(t)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	wrong := sshtest.NewHostKey(t)
	if err := os.WriteFile(knownHosts, []byte(sshtest.KnownHostsLine(srv.Addr, wrong)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newSSH(t, SSHConfig{Target: srv.Target, KeyFile: srv.UserKeyFile, KnownHosts: knownHosts,
		Command: "exec sleep 30", Dir: t.TempDir()})
	_, err := l.Start(context.Background(), testSpec(t, "", "v1"))
	if !errors.Is(err, ErrHostKeyChanged) {
		t.Fatalf("Start against a changed host key: %v; want ErrHostKeyChanged", err)
	}
	for _, want := range []string{"CHANGED", ssh.FingerprintSHA256(srv.HostKey), ssh.FingerprintSHA256(wrong), knownHosts + ":1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestSSHUsesTheAgent(t *testing.T) {
	srv := sshtest.Start(t)
	t.Setenv("SSH_AUTH_SOCK", sshtest.StartAgent(t, srv.UserKeyFile))
	l := newSSH(t, SSHConfig{Target: srv.Target, KnownHosts: srv.KnownHosts, Command: "exec sleep 30", Dir: t.TempDir()})
	inst := start(t, l, testSpec(t, "", "v1"))
	if desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 5*time.Second); err != nil || !strings.Contains(desc, "exited") {
		t.Fatalf("Stop = %q, %v", desc, err)
	}
}

func TestNewSSHReportsEveryProblem(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	_, err := NewSSH(SSHConfig{Target: "deploy@", KnownHosts: filepath.Join(t.TempDir(), "missing")})
	if err == nil {
		t.Fatal("NewSSH accepted a bad config")
	}
	for _, want := range []string{"want user@host", "command template is empty", "--ssh-key", "known hosts file", "--known-hosts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for target, want := range map[string]string{
		"deploy@app1":          "app1:22",
		"deploy@app1:2222":     "app1:2222",
		"deploy@[::1]:2200":    "[::1]:2200",
		"deploy@10.0.0.5":      "10.0.0.5:22",
		"deploy@[2001:db8::1]": "[2001:db8::1]:22",
	} {
		if u, addr, err := ParseSSHTarget(target); err != nil || u != "deploy" || addr != want {
			t.Errorf("ParseSSHTarget(%q) = %q, %q, %v; want deploy, %s", target, u, addr, err, want)
		}
	}
	if _, _, err := ParseSSHTarget("deploy@::1"); err == nil {
		t.Error("ParseSSHTarget accepted an IPv6 address without brackets")
	}
}

// TestSSHPruneKeepsTheNewestAndTheOnesInUse: the rule of Local.Prune on an
// SSH host (issue 13, item 9).
func TestSSHPruneKeepsTheNewestAndTheOnesInUse(t *testing.T) {
	srv := sshtest.Start(t)
	remoteDir := filepath.Join(t.TempDir(), "remote")
	l := newSSH(t, SSHConfig{Target: srv.Target, KeyFile: srv.UserKeyFile, KnownHosts: srv.KnownHosts,
		Command: "{artifact} --port {port}", Dir: remoteDir, KeepReleases: 2})
	old := time.Now().Add(-time.Hour)
	var artifacts []string
	for i, v := range []string{"v1", "v2", "v3", "v4"} {
		a := filepath.Join(remoteDir, "releases", v, "app.jar")
		if err := os.MkdirAll(filepath.Dir(a), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(a, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(remoteDir, "logs"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(remoteDir, "logs", "green-"+v+"-id.log"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		when := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(filepath.Dir(a), when, when); err != nil {
			t.Fatal(err)
		}
		artifacts = append(artifacts, a)
	}
	desc, err := l.Prune(context.Background(), []string{artifacts[0]})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, d := range []string{"releases", "logs"} {
		entries, _ := os.ReadDir(filepath.Join(remoteDir, d))
		for _, e := range entries {
			left = append(left, d+"/"+e.Name())
		}
	}
	want := "releases/v1 releases/v3 releases/v4 logs/green-v1-id.log logs/green-v3-id.log logs/green-v4-id.log"
	if got := strings.Join(left, " "); got != want {
		t.Errorf("left on the host: %s; want %s (prune said %q)", got, want, desc)
	}
}
