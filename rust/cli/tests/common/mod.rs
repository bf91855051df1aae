//! `eggscli` run as a user runs it: a child process against a given shuckle, shared by the
//! CLI integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

pub struct Cli {
    pub shuckle: SocketAddr,
}

impl Cli {
    /// The command, not started; the environment cannot point it elsewhere.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eggscli"));
        c.arg("--shuckle")
            .arg(self.shuckle.to_string())
            .args(args)
            .env_remove("EGGS_SHUCKLE")
            .env_remove("EGGS_GC_STATUS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self.command(args).spawn().expect("running eggscli");
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A command that does not read stdin may exit before we finish writing.
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().expect("eggscli finishes")
    }

    /// Runs a command as user `uid` with group `gid` and no supplementary groups (the test
    /// must run as root to switch).
    pub fn run_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        let mut c = self.command(args);
        c.uid(uid).gid(gid).stdin(Stdio::null());
        c.output().expect("running eggscli as another user")
    }

    /// Like [`Cli::ok`], as user `uid` with group `gid`.
    pub fn ok_as(&self, uid: u32, gid: u32, args: &[&str]) -> String {
        let out = self.run_as(uid, gid, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "eggscli {args:?} as {uid}:{gid} failed: {stderr}"
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Like [`Cli::fails`], as user `uid` with group `gid`.
    pub fn fails_as(&self, uid: u32, gid: u32, args: &[&str]) -> String {
        let out = self.run_as(uid, gid, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "eggscli {args:?} as {uid}:{gid}: {out:?}"
        );
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 errors");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        stderr.trim_end().to_string()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, b"")
    }

    pub fn ok_with(&self, args: &[&str], input: &[u8]) -> String {
        String::from_utf8(self.ok_bytes_with(args, input)).expect("UTF-8 output")
    }

    pub fn ok_bytes(&self, args: &[&str]) -> Vec<u8> {
        self.ok_bytes_with(args, b"")
    }

    fn ok_bytes_with(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let out = self.run(args, input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "eggscli {args:?} failed: {stderr}");
        out.stdout
    }

    /// Runs a command that must fail with exit code 1; returns its one-line error.
    pub fn fails(&self, args: &[&str]) -> String {
        let stderr = self.fails_verbose(args);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    }

    /// Like [`Cli::fails`] for commands that may print progress before their error.
    pub fn fails_verbose(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert_eq!(out.status.code(), Some(1), "eggscli {args:?}: {out:?}");
        String::from_utf8(out.stderr)
            .expect("UTF-8 errors")
            .trim_end()
            .to_string()
    }
}
