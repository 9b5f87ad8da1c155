// Package launcher starts and stops app instances for baton's deploys.
//
// # Model
//
// A Launcher starts one Instance of the app from a Spec: a port, an artifact
// (a file on baton's machine), a version and a colour. It installs the
// artifact into a per-version directory (releases/VERSION/NAME under its base
// directory, written to a temporary name and renamed, so that a running
// instance never sees a half-written file), then runs a command template,
// such as
//
//	java -jar {artifact} --server.port={port}
//
// through /bin/sh -c, in its own session and process group, with PORT,
// BATON_COLOR, BATON_VERSION, BATON_ARTIFACT and BATON_INSTANCE in its
// environment and its stdout and stderr appended to a per-deploy log file
// (logs/COLOR-VERSION-ID.log). The placeholders {artifact}, {port},
// {version} and {color} are replaced by shell-quoted values. A template that
// is one simple command is run with exec, so that the recorded PID is the
// app's own.
//
// Local runs the instance on this machine as a child of baton, which reaps it
// and so learns at once when it exits. SSH runs it on another host over one
// reused SSH connection per host (reconnected if it drops): the artifact is
// uploaded with SFTP, the instance is started detached with setsid so that it
// outlives the SSH session, and it is watched and stopped by PID. The host key
// is always checked against a known_hosts file unless the caller explicitly
// asks for InsecureIgnoreHostKey.
//
// An Instance is stopped with a signal to its process group, a grace period,
// then SIGKILL. The BATON_INSTANCE marker in its environment lets a launcher
// tell, after a restart of baton (Adopt), whether a recorded PID still names
// the instance it started, so that a reused PID is never signalled.
//
// A stop is done only once every thread of the process has exited and
// nothing listens on the instance's port any more (bounded): a JVM's main
// thread shows as a zombie while its other threads still hold the socket.
//
// Local can run the instance as another user (RunAs): baton opens the log
// and hands the app the descriptor, the release and log belong to baton
// with the app's group allowed to read them, and the app starts without
// any capability of baton's. After a deploy, Prune removes old releases and
// their logs, keeping the newest and the ones in use; Local's RotateLogs
// cuts an app log that grew too big, in place, while the app writes on.
//
// Several hosts per colour (a pool) would be one more Launcher whose Instance
// fans out to one Instance per host; the interfaces here need not change.
package launcher
