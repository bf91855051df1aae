//! POSIX attributes through a real eggsfuse mount, used by real processes of several users
//! (`setpriv` makes them): permission bits of owner, group and others, umask, setgid
//! directories, sticky directories, who may chmod, chown and set times; ctime, mtime and
//! atime; FIFOs, device nodes and sockets; the errnos of what an immutable file cannot do;
//! rsync of a real tree while servers are killed and under CPU load; git.
//!
//! Needs root, /dev/fuse, setpriv and python3, and the server binaries built (`cargo build
//! --bins`); skipped otherwise. The tests take one lock so that only one cluster runs at a
//! time.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

mod common;

use common::{can_run, have, setup, sh, Mount, Setup, ONE_AT_A_TIME};
use eggs_client::{Client, Stat};
use eggs_tests::{finish, finish_after_kills, FastRng};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process's credentials, as `setpriv` sets them.
#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

/// Owns the files of the permission tests (group 3001); also in group 4000.
const OWNER: User = User {
    uid: 2001,
    gid: 3001,
    groups: &[4000],
};
/// Not the owner, but in the files' group 3001 (as a supplementary group).
const MEMBER: User = User {
    uid: 2002,
    gid: 3002,
    groups: &[3001],
};
/// Neither owner nor in the group.
const OTHER: User = User {
    uid: 2003,
    gid: 3003,
    groups: &[],
};

/// Where the users' programs are (not root's pyenv, which they cannot read).
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether this machine has what the tests use beyond `can_run`'s.
fn can_run_posix() -> bool {
    if !can_run() {
        return false;
    }
    let ok = have("setpriv") && Path::new("/usr/bin/python3").is_file();
    if !ok {
        eprintln!("skipped: needs setpriv and /usr/bin/python3");
    }
    ok
}

/// `script` for `sh -c` in `cwd`, as `user` (root for `None`), in a clean environment.
fn command_as(user: Option<User>, cwd: &Path, script: &str) -> Command {
    let mut c = match user {
        None => Command::new("/bin/sh"),
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid));
            if u.groups.is_empty() {
                c.arg("--clear-groups");
            } else {
                let groups: Vec<String> = u.groups.iter().map(u32::to_string).collect();
                c.arg(format!("--groups={}", groups.join(",")));
            }
            c.arg("/bin/sh");
            c
        }
    };
    // A known umask unless the script sets its own.
    c.arg("-c")
        .arg(format!("umask 022\n{script}"))
        .current_dir(cwd)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/tmp")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

fn run_as(user: Option<User>, cwd: &Path, script: &str) -> Output {
    command_as(user, cwd, script)
        .output()
        .expect("the shell runs")
}

/// Runs `script` as `user`; panics with its output unless it succeeds; returns its stdout.
fn sh_as(user: Option<User>, cwd: &Path, script: &str) -> String {
    let out = run_as(user, cwd, script);
    assert!(
        out.status.success(),
        "`{script}` as {user:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` as `user` and returns its stderr, panicking if it succeeds.
fn sh_fails_as(user: Option<User>, cwd: &Path, script: &str) -> String {
    let out = run_as(user, cwd, script);
    assert!(
        !out.status.success(),
        "`{script}` as {user:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Helpers for the python snippets: `check(want, op, *args)` runs one operation and records
/// a mismatch between its outcome ("ok" or the errno's name) and `want`; the snippet fails
/// at the end listing every mismatch.
const PRELUDE: &str = r#"
import errno, os, stat as st_, subprocess, sys
bad = []
def read(p):
    with open(p, "rb") as f:
        f.read()
def write(p):
    # Replacing the contents: an existing file's only write on EggsFS.
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"written\n")
    finally:
        os.close(fd)
def run(p):
    r = subprocess.run([os.path.abspath(p)], stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0:
        raise OSError(errno.EIO, "exit %d: %s" % (r.returncode, r.stderr))
def create(p):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
def ls(p):
    os.listdir(p)
stat = os.stat
mkdir = os.mkdir
rmdir = os.rmdir
unlink = os.unlink
rename = os.rename
link = os.link
chmod = os.chmod
chown = os.chown
def utime_at(p, s):
    os.utime(p, (s, s))
def utime_now(p):
    os.utime(p)
def outcome(op, *args):
    try:
        globals()[op](*args)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"
def check(want, op, *args):
    got = outcome(op, *args)
    if got != want:
        bad.append("%s%r: %s, not %s" % (op, args, got, want))
def attrs(p):
    s = os.lstat(p)
    return "%o %d %d" % (st_.S_IMODE(s.st_mode), s.st_uid, s.st_gid)
def check_attrs(p, want):
    got = attrs(p)
    if got != want:
        bad.append("%s: %s, not %s" % (p, got, want))
"#;

const EPILOGUE: &str = r#"
if bad:
    sys.exit("uid %d: %d unexpected:\n  %s" % (os.getuid(), len(bad), "\n  ".join(bad)))
"#;

/// Runs a python3 snippet (with [`PRELUDE`]) as `user`; panics listing what it found wrong.
fn py_as(user: Option<User>, cwd: &Path, script: &str) -> String {
    sh_as(
        user,
        cwd,
        &format!("python3 - <<'EOF'\n{PRELUDE}\n{script}\n{EPILOGUE}\nEOF"),
    )
}

/// `stat -c '%a %u %g'` of each of `paths` in `cwd`, one a line.
fn attrs(cwd: &Path, paths: &str) -> String {
    sh_as(None, cwd, &format!("stat -c '%n %a %u %g' {paths}"))
}

fn now_ns() -> u64 {
    eggs_protocol::conv::nanos_of(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

/// The inode at `path` (not following a final symlink), as the shard describes it.
async fn shard_stat(client: &Client, path: &str) -> Stat {
    let (dir, name) = client.resolve_parent(path).await.unwrap();
    let edge = client.lookup(dir, &name).await.unwrap();
    client.stat(edge.target_id).await.unwrap()
}

/// `(atime, mtime, ctime)` in ns as the shard has them.
async fn shard_times(client: &Client, path: &str) -> (u64, u64, u64) {
    let (a, m, c) = shard_stat(client, path).await.times();
    (a.0, m.0, c.0)
}

/// `(atime, mtime, ctime)` in ns as the mount shows them.
fn mount_times(p: &Path) -> (u64, u64, u64) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ns = |s: i64, n: i64| (s as u64) * 1_000_000_000 + n as u64;
    (
        ns(m.atime(), m.atime_nsec()),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
    )
}

/// Waits until the file closed at `path` is linked (the link follows the kernel's release,
/// which comes after `close` returned), so that other clients and the shard see it.
async fn linked(client: &Client, path: &str) {
    let t0 = Instant::now();
    while client.resolve(path).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{path} gets linked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `cond` holds at once.
fn assert_now(what: &str, mut cond: impl FnMut() -> bool) {
    assert!(cond(), "{what}");
}

async fn done(s: Setup) {
    drop(s.mount);
    finish(s.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_group_and_other_bits_umask_and_setgid_directories() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-access").await;
    let t = s.mount.path("t");
    std::fs::create_dir(t.join("p")).unwrap();
    let p = t.join("p");
    // Files and directories of OWNER, group 3001, each with its mode; scripts exit 0.
    sh_as(
        None,
        &p,
        "for f in f640 f604 f462 f000; do echo data > $f; done && \
         for f in x754 x457; do printf '#!/bin/sh\\nexit 0\\n' > $f; done && \
         mkdir dx dw dr && echo in > dx/in && \
         chmod 640 f640 && chmod 604 f604 && chmod 462 f462 && chmod 000 f000 && \
         chmod 754 x754 && chmod 457 x457 && \
         chmod 644 dx/in && chmod 710 dx && chmod 735 dw && chmod 570 dr && \
         chown 2001:3001 f640 f604 f462 f000 x754 x457 dx dx/in dw dr",
    );
    assert_eq!(
        attrs(&p, "f640 f604 f462 x457 dx dw dr"),
        "f640 640 2001 3001\nf604 604 2001 3001\nf462 462 2001 3001\nx457 457 2001 3001\n\
         dx 710 2001 3001\ndw 735 2001 3001\ndr 570 2001 3001\n"
    );
    // The owner gets the owner bits, even where the group or others would get more.
    py_as(
        Some(OWNER),
        &p,
        r#"
check("ok", "read", "f640"); check("ok", "write", "f640")
check("ok", "read", "f604"); check("ok", "write", "f604")
check("ok", "read", "f462"); check("EACCES", "write", "f462")
check("EACCES", "read", "f000"); check("EACCES", "write", "f000")
check("ok", "run", "x754"); check("EACCES", "run", "x457")
check("ok", "stat", "dx/in"); check("ok", "ls", "dx")
check("ok", "create", "dw/by-owner"); check("ok", "ls", "dw")
check("EACCES", "create", "dr/by-owner"); check("ok", "ls", "dr")
"#,
    );
    // A member of the group (by a supplementary group) gets the group bits.
    py_as(
        Some(MEMBER),
        &p,
        r#"
check("ok", "read", "f640"); check("EACCES", "write", "f640")
check("EACCES", "read", "f604"); check("EACCES", "write", "f604")
check("ok", "read", "f462"); check("ok", "write", "f462")
check("ok", "run", "x754"); check("ok", "run", "x457")
check("ok", "stat", "dx/in"); check("EACCES", "ls", "dx")
check("ok", "create", "dw/by-member"); check("ok", "unlink", "dw/by-owner")
check("ok", "create", "dr/by-member"); check("ok", "ls", "dr")
"#,
    );
    // Everyone else gets the other bits.
    py_as(
        Some(OTHER),
        &p,
        r#"
check("EACCES", "read", "f640"); check("EACCES", "write", "f640")
check("ok", "read", "f604"); check("EACCES", "write", "f604")
check("EACCES", "read", "f462"); check("ok", "write", "f462")
check("EACCES", "run", "x754"); check("ok", "run", "x457")
check("EACCES", "stat", "dx/in"); check("EACCES", "ls", "dx")
check("EACCES", "create", "dw/by-other"); check("ok", "ls", "dw"); check("ok", "stat", "dw/by-member")
check("EACCES", "unlink", "dw/by-member")
check("EACCES", "create", "dr/by-other"); check("EACCES", "ls", "dr")
"#,
    );
    // Root reads and writes anything, but executes only what someone may.
    py_as(
        None,
        &p,
        r#"
check("ok", "read", "f000"); check("ok", "write", "f000")
check("EACCES", "run", "f000"); check("ok", "run", "x457")
check("ok", "ls", "dr"); check("ok", "create", "dr/by-root")
"#,
    );
    // Writing replaced those files' contents; their modes and owners stayed.
    assert_eq!(
        attrs(&p, "f640 f604 f462 f000 dw/by-member"),
        "f640 640 2001 3001\nf604 604 2001 3001\nf462 462 2001 3001\nf000 0 2001 3001\n\
         dw/by-member 644 2002 3002\n"
    );
    assert_eq!(sh(&p, "cat f462 f640 f604"), "written\n".repeat(3));

    // New inodes: the creator's uid and gid (its effective gid, not a supplementary group),
    // the mode less the umask.
    sh_as(None, &t, "mkdir home && chown 2001:3001 home");
    let home = t.join("home");
    sh_as(
        Some(OWNER),
        &home,
        "umask 027 && touch f && echo x > e && mkdir d && mkfifo p && ln -s f l && \
         umask 002 && touch f2 && mkdir d2 && \
         umask 077 && python3 -c 'import os; os.close(os.open(\"py\", os.O_CREAT | os.O_WRONLY, 0o666))'",
    );
    assert_eq!(
        attrs(&home, "f e d p l f2 d2 py"),
        "f 640 2001 3001\ne 640 2001 3001\nd 750 2001 3001\np 640 2001 3001\n\
         l 777 2001 3001\nf2 664 2001 3001\nd2 775 2001 3001\npy 600 2001 3001\n"
    );

    // A setgid directory gives its group to what is made in it, and setgid to directories.
    sh_as(None, &t, "mkdir sg && chown 2001:4000 sg && chmod 2777 sg");
    let sg = t.join("sg");
    sh_as(
        Some(OTHER),
        &sg,
        "umask 022 && touch f && mkdir d && mkdir d/e && touch d/e/f && mkfifo p && \
         python3 -c 'import os; os.umask(0); os.close(os.open(\"s\", os.O_CREAT | os.O_WRONLY, 0o2755))'",
    );
    // The group's member may keep setgid on a file of that group; others may not.
    sh_as(
        Some(OWNER),
        &sg,
        "python3 -c 'import os; os.umask(0); os.close(os.open(\"s1\", os.O_CREAT | os.O_WRONLY, 0o2755))'",
    );
    assert_eq!(
        attrs(&sg, "f d d/e d/e/f p s s1"),
        "f 644 2003 4000\nd 2755 2003 4000\nd/e 2755 2003 4000\nd/e/f 644 2003 4000\n\
         p 644 2003 4000\ns 755 2003 4000\ns1 2755 2001 4000\n"
    );
    // Without setgid, the creator's group.
    // (`chmod 777` would keep a directory's setgid, as GNU chmod does.)
    sh_as(None, &t, "chmod g-s sg");
    assert_eq!(attrs(&t, "sg"), "sg 777 2001 4000\n");
    sh_as(Some(OTHER), &sg, "umask 022 && touch g && mkdir h");
    assert_eq!(attrs(&sg, "g h"), "g 644 2003 3003\nh 755 2003 3003\n");

    // All of it is the shard's, not just the kernel's cache: a fresh mount sees the same.
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    let again = fresh.path("t");
    assert_eq!(
        attrs(
            &again,
            "p/f462 p/dx p/dw/by-member home/d2 home/py sg/d/e sg/s1 sg/h"
        ),
        "p/f462 462 2001 3001\np/dx 710 2001 3001\np/dw/by-member 644 2002 3002\n\
         home/d2 775 2001 3001\nhome/py 600 2001 3001\nsg/d/e 2755 2003 4000\n\
         sg/s1 2755 2001 4000\nsg/h 755 2003 3003\n"
    );
    drop(fresh);
    done(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_directories_and_who_may_chown_chmod_and_set_times() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-owners").await;
    let t = s.mount.path("t");

    // Sticky: in a 1777 directory only a file's owner (or the directory's, or root) may
    // unlink or rename it, or rename something over it.
    sh_as(
        None,
        &t,
        "mkdir tmp && chmod 1777 tmp && mkdir tmp2 && chown 2002 tmp2 && chmod 1777 tmp2",
    );
    sh_as(
        Some(OWNER),
        &t,
        "echo mine > tmp/mine && chmod 666 tmp/mine && echo mine > tmp/mine2 && \
         echo mine > tmp2/mine && mkdir tmp/mydir",
    );
    sh_as(Some(OTHER), &t, "echo theirs > tmp/theirs");
    py_as(
        Some(OTHER),
        &t,
        r#"
check("EPERM", "unlink", "tmp/mine")
check("EPERM", "rename", "tmp/mine", "tmp/taken")
check("EPERM", "rename", "tmp/theirs", "tmp/mine")
check("EPERM", "rmdir", "tmp/mydir")
check("ok", "rename", "tmp/theirs", "tmp/theirs2")
check("EPERM", "unlink", "tmp2/mine")
"#,
    );
    // The directory's owner may.
    py_as(Some(MEMBER), &t, r#"check("ok", "unlink", "tmp2/mine")"#);
    py_as(
        Some(OWNER),
        &t,
        r#"
check("ok", "rename", "tmp/mine", "tmp/moved")
check("ok", "unlink", "tmp/moved")
check("ok", "rmdir", "tmp/mydir")
check("EPERM", "unlink", "tmp/theirs2")
"#,
    );
    py_as(None, &t, r#"check("ok", "unlink", "tmp/theirs2")"#);
    assert_eq!(sh(&t, "ls tmp tmp2"), "tmp:\nmine2\n\ntmp2:\n");
    let err = sh_fails_as(Some(OTHER), &t, "rm -f tmp/mine2");
    assert!(err.contains("Operation not permitted"), "{err}");

    // chown and chmod.
    sh_as(
        None,
        &t,
        "mkdir home && chown 2001:3001 home && chmod 755 home",
    );
    let home = t.join("home");
    sh_as(
        Some(OWNER),
        &home,
        "echo c > c && echo s > s6 && chmod 6755 s6 && echo s > s7 && chmod 6755 s7 && \
         echo g > g && echo w > w && chmod 666 w && echo r > r && chmod 644 r",
    );
    assert_eq!(
        attrs(&home, "s6 s7"),
        "s6 6755 2001 3001\ns7 6755 2001 3001\n"
    );
    py_as(
        Some(OWNER),
        &home,
        r#"
check("EPERM", "chown", "c", 2003, -1)
check("ok", "chown", "c", 2001, -1)
check("ok", "chown", "c", -1, 4000)
check_attrs("c", "644 2001 4000")
check("EPERM", "chown", "c", -1, 3003)
check("ok", "chown", "c", -1, 3001)
check("ok", "chmod", "c", 0o600)
check_attrs("c", "600 2001 3001")
# An owner's chgrp clears setuid and setgid (with group execute).
check("ok", "chown", "s7", -1, 4000)
check_attrs("s7", "755 2001 4000")
"#,
    );
    py_as(
        Some(MEMBER),
        &home,
        r#"
check("EPERM", "chmod", "c", 0o666)
check("EPERM", "chown", "c", -1, 3001)
check("EPERM", "chown", "c", 2002, -1)
"#,
    );
    py_as(
        Some(OTHER),
        &home,
        r#"
check("EPERM", "chmod", "c", 0o777)
check("EPERM", "chmod", "w", 0o777)
check_attrs("c", "600 2001 3001")
"#,
    );
    // Root gives files away; that clears setuid and setgid.
    sh_as(
        None,
        &home,
        "chown 2003:3003 s6 && chmod 4711 c && chown 2002 c",
    );
    assert_eq!(attrs(&home, "s6 c"), "s6 755 2003 3003\nc 711 2002 3001\n");
    // An owner not in the file's group cannot set setgid (the kernel drops it).
    sh_as(None, &home, "chgrp 3003 g");
    sh_as(Some(OWNER), &home, "chmod 2755 g");
    assert_eq!(attrs(&home, "g"), "g 755 2001 3003\n");
    // A non-owner's chmod says EPERM in the shell too.
    let err = sh_fails_as(Some(OTHER), &home, "chmod 777 w");
    assert!(err.contains("Operation not permitted"), "{err}");

    // Times: a given time needs ownership, "now" only write permission.
    sh_as(Some(OWNER), &home, "touch -d @1000000000 w r");
    let err = sh_fails_as(Some(OTHER), &home, "touch -d @5 w");
    assert!(err.contains("Operation not permitted"), "{err}");
    let err = sh_fails_as(Some(OTHER), &home, "touch r");
    assert!(err.contains("Permission denied"), "{err}");
    py_as(
        Some(OTHER),
        &home,
        r#"
check("EPERM", "utime_at", "w", 5)
check("EACCES", "utime_now", "r")
"#,
    );
    assert_eq!(sh(&home, "stat -c %Y w r"), "1000000000\n1000000000\n");
    let before = now_ns() / 1_000_000_000;
    sh_as(Some(OTHER), &home, "touch w");
    let mtime: u64 = sh(&home, "stat -c %Y w").trim().parse().unwrap();
    assert!(
        mtime >= before,
        "touch by a writer sets now: {mtime} < {before}"
    );
    let (_, m, _) = shard_times(&s.client, "/t/home/w").await;
    assert!(m / 1_000_000_000 >= before, "the shard has it: {m}");
    // The owner and root set any time.
    sh_as(Some(OWNER), &home, "touch -d @1200000000 w");
    sh_as(None, &home, "touch -d @1300000000 r");
    assert_eq!(sh(&home, "stat -c %Y w r"), "1200000000\n1300000000\n");
    done(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctime_mtime_and_atime_follow_changes() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-times").await;
    let t = s.mount.path("t");
    let c = &s.client;
    const T9: u64 = 1_000_000_000_000_000_000;

    // `touch -d` sets mtime and atime exactly, on the shard too.
    sh(&t, "echo x > f");
    linked(c, "/t/f").await;
    sh(&t, "touch -d @1000000000 f");
    let (a, m, c0) = mount_times(&t.join("f"));
    assert_eq!((a, m), (T9, T9));
    let (sa, sm, sc0) = shard_times(c, "/t/f").await;
    assert_eq!((sa, sm), (T9, T9));
    assert_eq!(sc0, c0, "the mount shows the shard's ctime");

    // chmod moves ctime, not mtime or atime.
    std::thread::sleep(Duration::from_millis(20));
    let t1 = now_ns();
    sh(&t, "chmod 600 f");
    let (a, m, c1) = mount_times(&t.join("f"));
    assert_eq!((a, m), (T9, T9));
    assert!(
        c1 >= t1 && c1 > c0,
        "chmod moves ctime: {c0} -> {c1} (at {t1})"
    );
    let (sa, sm, sc1) = shard_times(c, "/t/f").await;
    assert_eq!((sa, sm), (T9, T9));
    assert!(sc1 >= t1, "on the shard: {sc1} < {t1}");
    // And so does chown.
    std::thread::sleep(Duration::from_millis(20));
    let t2 = now_ns();
    sh(&t, "chown 2001:3001 f");
    let (_, sm, sc2) = shard_times(c, "/t/f").await;
    assert!(
        sc2 >= t2 && sm == T9,
        "chown: ctime {sc2} (at {t2}), mtime {sm}"
    );

    // Making a file or a directory in a directory moves its mtime and ctime.
    sh(&t, "mkdir d && touch -d @1000000000 d");
    let (_, m, _) = shard_times(c, "/t/d").await;
    assert_eq!(m, T9);
    let t1 = now_ns();
    sh(&t, "echo y > d/new");
    linked(c, "/t/d/new").await;
    let (_, sm, sc) = shard_times(c, "/t/d").await;
    assert!(
        sm >= t1 && sc >= t1,
        "a new file: d's mtime {sm}, ctime {sc} (at {t1})"
    );
    // The kernel caches a directory's attributes for a moment.
    eventually("the mount shows d's new mtime", || {
        let (_, m, c) = mount_times(&t.join("d"));
        m >= t1 && c >= t1
    });
    sh(&t, "touch -d @1000000000 d");
    let t1 = now_ns();
    sh(&t, "mkdir d/sub");
    let (_, sm, sc) = shard_times(c, "/t/d").await;
    assert!(
        sm >= t1 && sc >= t1,
        "a new directory: d's mtime {sm}, ctime {sc}"
    );

    // A rename in one directory moves the file's ctime (and its directory's mtime), not
    // the file's mtime.
    sh(&t, "echo z > g && touch -d @1000000000 g");
    linked(c, "/t/g").await;
    sh(&t, "touch -d @1000000000 g");
    let (_, _, sc0) = shard_times(c, "/t/g").await;
    std::thread::sleep(Duration::from_millis(20));
    let t1 = now_ns();
    sh(&t, "mv g h");
    let (_, sm, sc) = shard_times(c, "/t/h").await;
    assert!(
        sc >= t1 && sc > sc0,
        "rename moves ctime: {sc0} -> {sc} (at {t1})"
    );
    assert_eq!(sm, T9, "rename keeps mtime");
    let (_, m, mc) = mount_times(&t.join("h"));
    assert!(m == T9 && mc >= t1, "the mount: mtime {m}, ctime {mc}");
    let (_, dm, _) = shard_times(c, "/t").await;
    assert!(dm >= t1, "rename moves the directory's mtime");

    // utimensat on a directory, to the nanosecond; and on a symlink itself.
    sh(&t, "mkdir e && ln -s nowhere e/l");
    let (at, mt) = (1_111_111_111_222_333_444u64, 1_234_567_890_123_456_789u64);
    common::python(
        &t,
        &format!(
            "import os\nos.utime('e', ns=({at}, {mt}))\n\
             os.utime('e/l', ns=({at}, {mt}), follow_symlinks=False)"
        ),
    );
    let (a, m, _) = mount_times(&t.join("e"));
    assert_eq!((a, m), (at, mt), "the mount shows e's times");
    let (sa, sm, _) = shard_times(c, "/t/e").await;
    assert_eq!((sa, sm), (at, mt), "the shard keeps e's times");
    let (sa, sm, _) = shard_times(c, "/t/e/l").await;
    assert_eq!((sa, sm), (at, mt), "the shard keeps the symlink's times");
    sh(&t, "touch -m -d @1500000000.25 e");
    let (a, m, _) = mount_times(&t.join("e"));
    assert_eq!(
        (a, m),
        (at, 1_500_000_000_250_000_000),
        "touch -m of a directory"
    );
    // A fresh mount agrees.
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    let (a, m, _) = mount_times(&fresh.path("t/e/l"));
    assert_eq!((a, m), (at, mt));
    let (a, m, _) = mount_times(&fresh.path("t/f"));
    assert_eq!((a, m), (T9, T9));
    drop(fresh);
    done(s).await;
}

/// `stat -c '%n|%F|%t,%T|%a'` of `names` in `cwd`.
fn kinds(cwd: &Path, names: &str) -> String {
    sh(cwd, &format!("stat -c '%n|%F|%t,%T|%a' {names}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_devices_and_sockets_and_no_hard_links() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-special").await;
    let t = s.mount.path("t");
    let make = "umask 022 && mkfifo p && mknod c c 1 3 && mknod b b 7 0 && \
                python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"s\")' && \
                echo f > f";
    // The same made on a local file system is what the mount must show.
    let local = s.local.join("special");
    std::fs::create_dir_all(&local).unwrap();
    sh_as(None, &local, make);
    sh_as(None, &t, make);
    let want = kinds(&local, "p c b s f");
    assert_eq!(
        want,
        "p|fifo|0,0|644\nc|character special file|1,3|644\nb|block special file|7,0|644\n\
         s|socket|0,0|755\nf|regular file|0,0|644\n"
    );
    assert_eq!(kinds(&t, "p c b s f"), want);
    assert_eq!(sh(&t, "ls"), "b\nc\nf\np\ns\n");
    assert_eq!(sh(&t, "ls -l | cut -c1 | sort | tr -d '\\n'"), "-bcpst");
    for (typ, name) in [("p", "p"), ("c", "c"), ("b", "b"), ("s", "s"), ("f", "f")] {
        assert_eq!(
            sh(&t, &format!("find . -type {typ}")),
            format!("./{name}\n")
        );
    }
    // The shard keeps the type and the device number (Linux's encoding, as FUSE gives it).
    let rdev = |st: &Stat| match st {
        Stat::File { rdev, .. } => *rdev,
        Stat::Directory { .. } => panic!("a file"),
    };
    let cst = shard_stat(&s.client, "/t/c").await;
    assert_eq!((cst.attrs().mode, rdev(&cst)), (0o020_644, 0x103));
    let bst = shard_stat(&s.client, "/t/b").await;
    assert_eq!((bst.attrs().mode, rdev(&bst)), (0o060_644, 0x700));
    assert_eq!(shard_stat(&s.client, "/t/p").await.attrs().mode, 0o010_644);
    assert_eq!(shard_stat(&s.client, "/t/s").await.attrs().mode, 0o140_755);
    // A FIFO works as one (the kernel's pipe, once it knows the type).
    common::python(
        &t,
        "import os\nfd = os.open('p', os.O_RDWR | os.O_NONBLOCK)\nos.write(fd, b'through')\n\
         assert os.read(fd, 100) == b'through'\nos.close(fd)",
    );
    // The mount is nodev: devices do not open.
    let err = sh_fails_as(None, &t, "head -c 1 c");
    assert!(err.contains("Permission denied"), "{err}");
    // Names are made once.
    let err = sh_fails_as(None, &t, "mkfifo p");
    assert!(err.contains("File exists"), "{err}");
    let err = sh_fails_as(None, &t, "mknod f c 1 3");
    assert!(err.contains("File exists"), "{err}");

    // Renamed, within and across directories; a fresh mount sees them all as they were.
    sh(
        &t,
        "mkdir sub && mv p p2 && mv c c2 && mv b sub/b2 && mv s sub/s2",
    );
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    let ft = fresh.path("t");
    assert_eq!(
        kinds(&ft, "p2 c2 sub/b2 sub/s2"),
        "p2|fifo|0,0|644\nc2|character special file|1,3|644\n\
         sub/b2|block special file|7,0|644\nsub/s2|socket|0,0|755\n"
    );
    drop(fresh);

    // No hard links, of any kind of file.
    for name in ["f", "p2", "c2", "sub"] {
        let err = sh_fails_as(None, &t, &format!("ln {name} {name}.link"));
        assert!(
            err.contains("Operation not permitted") || err.contains("hard link not allowed"),
            "ln {name}: {err}"
        );
    }
    py_as(
        None,
        &t,
        r#"
check("EPERM", "link", "f", "f.link")
check("EPERM", "link", "p2", "p2.link")
"#,
    );

    // Users make FIFOs and sockets of their own; only root makes devices.
    sh_as(None, &t, "mkdir u && chown 2001:3001 u");
    sh_as(
        Some(OWNER),
        &t.join("u"),
        "mkfifo p && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"s\")'",
    );
    let err = sh_fails_as(Some(OWNER), &t.join("u"), "mknod c c 1 3");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(
        sh(&t.join("u"), "stat -c '%n %F %u %g' *"),
        "p fifo 2001 3001\ns socket 2001 3001\n"
    );

    // And they go.
    sh(&t, "rm p2 c2 sub/b2 sub/s2 u/p u/s && rmdir sub");
    assert_eq!(sh(&t, "ls"), "f\nu\n");
    done(s).await;
}

/// In a directory of many entries, the kernel reads all but the first batch with plain
/// READDIR (FUSE_READDIRPLUS_AUTO), whose entries carry their type from the inode id alone:
/// FIFOs, sockets and devices there are listed as regular files (DT_REG), so `find -type p`
/// misses them and `ls --color`, `rsync` and python's `scandir` take them for files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_keep_their_type_in_big_listings() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-bigdir").await;
    let t = s.mount.path("t");
    sh(
        &t,
        "mkdir big && cd big && seq 1 1000 | xargs touch && mkfifo zz-p && mknod zz-c c 1 3",
    );
    assert_eq!(sh(&t, "find big -type p"), "big/zz-p\n");
    assert_eq!(sh(&t, "find big -type c"), "big/zz-c\n");
    done(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_files_errnos_and_attributes_of_open_files() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-errnos").await;
    let t = s.mount.path("t");
    const T9: u64 = 1_000_000_000_000_000_000;
    // Another mount sees a file once it is linked.
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    let script = format!("OTHER = '{}'\n", fresh.path("t").display())
        + r#"
import ctypes, time
def settle(p):
    # Waits until another mount sees the file (it is linked), so that what follows
    # tests a linked file.
    t0 = time.time()
    while not os.path.exists(os.path.join(OTHER, p)):
        assert time.time() - t0 < 10, p
        time.sleep(0.01)
with open("old", "wb") as f:
    f.write(b"old contents")
settle("old")
# Writing not at the end.
fd = os.open("new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"a" * 10000)
for off in (0, 5000, 9999, 10001):
    try:
        os.pwrite(fd, b"x", off)
        bad.append("pwrite at %d worked" % off)
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            bad.append("pwrite at %d: %s" % (off, errno.errorcode[e.errno]))
os.pwrite(fd, b"b", 10000)
os.close(fd)
settle("new")
assert open("new", "rb").read() == b"a" * 10000 + b"b"
# A linked file is never written into, only replaced.
def open_rw(p): open(p, "r+b")
def open_append(p): open(p, "ab")
def open_wronly(p): os.close(os.open(p, os.O_WRONLY))
def truncate_to(p, n): os.truncate(p, n)
check("EPERM", "open_rw", "old")
check("EPERM", "open_append", "old")
check("EPERM", "open_wronly", "old")
check("EPERM", "truncate_to", "old", 3)
check("EPERM", "truncate_to", "old", 100)
check("EPERM", "truncate_to", "old", 0)
check("ok", "truncate_to", "old", len(b"old contents"))
assert open("old", "rb").read() == b"old contents"
# RENAME_EXCHANGE cannot be done; RENAME_NOREPLACE can.
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
check("EINVAL", "renameat2", "old", "new", 2)
check("EEXIST", "renameat2", "old", "new", 1)
check("ok", "renameat2", "old", "older", 1)
assert open("older", "rb").read() == b"old contents"
assert open("new", "rb").read() == b"a" * 10000 + b"b"

# The rest of docs/POSIX.md's table. A second writer, a read through the writing
# descriptor, fallocate: not while a file is being written.
import fcntl, mmap
fd = os.open("busy", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"w" * 100)
def second_writer(p): os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
def read_back(fd): os.pread(fd, 10, 0)
def fallocate(fd):
    if libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(4096)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
# (Python names errno 95 ENOTSUP; EOPNOTSUPP is the same number on Linux.)
check("EBUSY", "second_writer", "busy")
check("ENOTSUP", "read_back", fd)
check("ENOTSUP", "fallocate", fd)
os.close(fd)
settle("busy")
assert open("busy", "rb").read() == b"w" * 100
# No extended attributes.
def getxattr(p): os.getxattr(p, "user.x")
def setxattr(p): os.setxattr(p, "user.x", b"1")
def listxattr(p): os.listxattr(p)
check("ENOTSUP", "getxattr", "older")
check("ENOTSUP", "setxattr", "older")
check("ENOTSUP", "listxattr", "older")
# mmap: read-only works, a shared writable mapping of a linked file cannot be had; flock
# locks (within this machine).
with open("older", "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    assert m[:] == b"old contents"
    m.close()
    def map_shared_writable(fd):
        mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    check("EACCES", "map_shared_writable", f.fileno())
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

# chmod, fchmod, fchown and utime of a file still being written are applied to it.
fd = os.open("open", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"c" * 200000)
os.fchmod(fd, 0o640)
os.write(fd, b"d" * 1000)
os.chmod("open", 0o604)
os.fchown(fd, 2001, 3001)
os.utime(fd, ns=(1000000000000000000, 1100000000123456789))
os.close(fd)
fd = os.open("open2", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"e" * 5000)
os.chown("open2", 2002, 3002)
os.utime("open2", (1200000000, 1300000000))
os.chmod("open2", 0o4755)
os.close(fd)
# (Their times, see `times_set_on_an_open_file_show_right_after_close`, are checked below.)
for p, want in (("open", (0o604, 2001, 3001, 201000)), ("open2", (0o4755, 2002, 3002, 5000))):
    st = os.stat(p)
    got = (st_.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size)
    if got != want:
        bad.append("%s after close: %r, not %r" % (p, got, want))
"#;
    py_as(None, &t, &script);
    // Right after close, with no waiting.
    assert_now("the times set while open show in the mount", || {
        let (a, m, _) = mount_times(&t.join("open"));
        let (a2, m2, _) = mount_times(&t.join("open2"));
        (a, m, a2, m2)
            == (
                T9,
                1_100_000_000_123_456_789,
                1_200_000_000_000_000_000,
                1_300_000_000_000_000_000,
            )
    });
    // The shard has them (not just the kernel), as another mount shows.
    assert_eq!(
        sh(
            &fresh.path("t"),
            "stat -c '%n %a %u %g %X %Y %s' open open2"
        ),
        "open 604 2001 3001 1000000000 1100000000 201000\n\
         open2 4755 2002 3002 1200000000 1300000000 5000\n"
    );
    drop(fresh);
    let st = shard_stat(&s.client, "/t/open").await;
    assert_eq!(st.times().1 .0, 1_100_000_000_123_456_789);

    // Right after close, the file is there for stat, chmod, rename and unlink, and for
    // opening it again (replacing it, or failing as a linked file does).
    sh(&t, "mkdir loop && chown 2001:3001 loop");
    py_as(
        Some(OWNER),
        &t.join("loop"),
        r#"
for i in range(200):
    n = "f%d" % i
    with open(n, "wb") as f:
        f.write(b"x" * (i * 997 % 70000))
    check("ok", "stat", n)
    check("ok", "chmod", n, 0o600)
    check("ok", "rename", n, "r%d" % i)
    check("ok", "stat", "r%d" % i)
    check_attrs("r%d" % i, "600 2001 3001")
for i in range(200):
    n = "u%d" % i
    fd = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"y" * (i * 31 % 9000))
    os.close(fd)
    check("ok", "unlink", n)
    check("ENOENT", "stat", n)
names = sorted(os.listdir("."))
if names != sorted("r%d" % i for i in range(200)):
    bad.append("left: %r" % names)
for i in range(200):
    if os.path.getsize("r%d" % i) != i * 997 % 70000:
        bad.append("r%d has %d bytes" % (i, os.path.getsize("r%d" % i)))
"#,
    );
    done(s).await;
}

/// Times set on a file being written (futimens, utimensat) are kept by the link, but the
/// mount reports "now" for a file being written (`writing_attr`), also in the reply to the
/// very setattr that set them (with the 10 s file attribute timeout) and to lookups (1 s),
/// and nothing makes the kernel forget those attributes when the file is linked: `stat`
/// right after `close` shows the wrong mtime and atime until the dentry is looked up again
/// (after a path lookup of the open file, e.g. `utime(path)`, `chmod(path)`, `stat(path)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_set_on_an_open_file_show_right_after_close() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-open-times").await;
    let t = s.mount.path("t");
    py_as(
        None,
        &t,
        r#"
fd = os.open("f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"x" * 1000)
os.utime("f", ns=(1000000000000000000, 1100000000123456789))
st = os.fstat(fd)
if (st.st_atime_ns, st.st_mtime_ns) != (1000000000000000000, 1100000000123456789):
    bad.append("fstat while open: %d %d" % (st.st_atime_ns, st.st_mtime_ns))
os.close(fd)
st = os.stat("f")
if (st.st_atime_ns, st.st_mtime_ns) != (1000000000000000000, 1100000000123456789):
    bad.append("stat after close: %d %d" % (st.st_atime_ns, st.st_mtime_ns))
"#,
    );
    done(s).await;
}

/// Right after `close`, before the kernel's release has been answered (the link stores the
/// last span), the file is already there for the next program, which may read it or replace
/// it at once (`cp a b && cmp a b`, `echo 1 > f; echo 2 > f`, git reading the index it just
/// renamed into place). Two things go wrong about once in a hundred:
/// - a read-only open is answered at once, and the read cache fetches (and keeps for good)
///   the span list of the transient file, which lacks the spans the link stores: the read
///   stops short (at the last whole page the kernel had cached from the writes), and the
///   kernel shrinks the file's size to that;
/// - an open for writing (`O_TRUNC` replacing it, or `r+`) gives `EBUSY` while the inode is
///   still in `Inner::writing` (until the link is done), not a replacement or `EPERM`;
/// - after a replacement (`O_TRUNC`), which the kernel knows by the old file's inode, a read
///   right after close reads the old file's spans: the old contents, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_replacements_right_after_close() {
    if !can_run_posix() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-after-close").await;
    let t = s.mount.path("t");
    py_as(
        None,
        &t,
        r#"
import random
r = random.Random(7)
def open_rw(p): open(p, "r+b")
new = {}
def replace(p):
    with open(p, "wb") as f:
        f.write(new[p])
for i in range(300):
    n = "f%d" % i
    size = r.choice([1000, 70000, 1048575, 1048577, 3000000])
    a = r.randbytes(size)
    with open(n, "wb") as f:
        f.write(a)
    got = open(n, "rb").read()
    if got != a:
        bad.append("%s: read %d bytes of %d right after close" % (n, len(got), size))
    check("EPERM", "open_rw", n)
    new[n] = b = r.randbytes(size + 1)
    check("ok", "replace", n)
    got = open(n, "rb").read()
    if got != b:
        bad.append("%s: read %d bytes of %d right after replacing" % (n, len(got), size + 1))
    if len(bad) > 20:
        break
"#,
    );
    done(s).await;
}

/// Busy-looping shells, killed when dropped.
struct CpuLoad(Vec<Child>);

impl CpuLoad {
    fn start(n: usize) -> CpuLoad {
        let spin = || {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .expect("sh starts")
        };
        CpuLoad((0..n).map(|_| spin()).collect())
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real tree to copy: the first entries of /usr/share/doc (in name order) up to about
/// `files` files, copied into `dst` (plus a subtree of another owner and a few modes), or a
/// generated tree where there is no such directory.
fn doc_tree(dst: &Path, files: usize) -> usize {
    std::fs::create_dir_all(dst).unwrap();
    let doc = Path::new("/usr/share/doc");
    let mut names: Vec<PathBuf> = std::fs::read_dir(doc)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    let mut taken = 0;
    for n in names {
        if taken >= files {
            break;
        }
        let out = Command::new("cp")
            .arg("-a")
            .arg(&n)
            .arg(dst)
            .output()
            .expect("cp runs");
        if !out.status.success() {
            continue;
        }
        taken = sh(dst, "find . -type f | wc -l").trim().parse().unwrap();
    }
    // Enough of a tree anyway, with a few entries of every kind rsync handles.
    let gen = dst.join("zz-generated");
    for d in 0..8 {
        let dir = gen.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        let n = if taken < 200 { 60 } else { 5 };
        for f in 0..n {
            let mut data = vec![0u8; (d * 7919 + f * 104_729) % 300_000];
            FastRng::new((d * 1000 + f) as u64).fill(&mut data);
            std::fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
    sh(
        &gen,
        "ln -s d0/f1 link && ln -s ../../outside dangling && mkdir empty && \
         chown -R 2001:3001 d1 && chmod 600 d2/f0 && chmod 4755 d2/f1 && chmod 2750 d3 && \
         touch -d @1000000000 d4/f0 d4",
    );
    sh(dst, "find . | wc -l").trim().parse().unwrap()
}

/// Starts `rsync -a` copying `src` into `dst`, its output going to `log`.
fn rsync(src: &Path, dst: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("rsync starts")
}

/// The copy is identical: contents, symlinks, and (a second rsync finds nothing to do)
/// modes, owners and times.
fn assert_same_tree(src: &Path, dst: &Path) {
    sh(
        dst,
        &format!(
            "diff -r --no-dereference {} {}",
            src.display(),
            dst.display()
        ),
    );
    let changes = sh(
        dst,
        &format!(
            "rsync -a --dry-run --itemize-changes {}/ {}/",
            src.display(),
            dst.display()
        ),
    );
    assert!(
        changes.trim().is_empty(),
        "rsync would still change:\n{changes}"
    );
}

/// Which processes the kill tests kill, by name prefix.
const KILLABLE: &[&str] = &["shard-", "cdc", "blocks-"];

/// Copies a real tree with rsync into the mount while random shard, CDC and block-service
/// processes are killed (SIGKILL, then restarted a moment later) every 1-2 s, optionally
/// under CPU load; rsync must succeed and the copy be identical.
async fn rsync_while_killing(name: &str, load: usize) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = setup(name).await;
    let src = s.local.join("src");
    let entries = doc_tree(&src, 1100);
    let dst = s.mount.path("t/copy");
    let log = s.local.join("rsync.log");
    let victims: Vec<String> = s
        .cluster
        .names()
        .into_iter()
        .filter(|n| KILLABLE.iter().any(|k| n.starts_with(k)))
        .collect();
    let mut rng = FastRng::new(now_ns());
    let first_kind = (rng.next_u64() % KILLABLE.len() as u64) as usize;
    let cpu = CpuLoad::start(load);
    let t0 = Instant::now();
    let mut rs = rsync(&src, &dst, &log);
    let mut killed: Vec<String> = Vec::new();
    let mut kills = std::collections::BTreeMap::<String, usize>::new();
    let mut next_kill = Instant::now() + Duration::from_millis(1000);
    let status = loop {
        if let Some(st) = rs.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "rsync did not finish in 5 minutes; its output:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if Instant::now() >= next_kill {
            // The kinds in turn, then one of its processes, so that the one CDC and the
            // one shard process are killed as often as the seven block services together.
            let kind = KILLABLE[(first_kind + kills.values().sum::<usize>()) % KILLABLE.len()];
            let of_kind: Vec<&String> = victims.iter().filter(|v| v.starts_with(kind)).collect();
            let v = of_kind[(rng.next_u64() % of_kind.len() as u64) as usize].clone();
            s.cluster.kill(&v, eggs_run::Signal::SIGKILL).unwrap();
            tokio::time::sleep(Duration::from_millis(100 + rng.next_u64() % 200)).await;
            s.cluster.restart(&v).await.unwrap();
            *kills
                .entry(kind.trim_end_matches('-').to_string())
                .or_default() += 1;
            killed.push(v);
            next_kill = Instant::now() + Duration::from_millis(1000 + rng.next_u64() % 1000);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = t0.elapsed();
    drop(cpu);
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "{name}: rsync of {entries} entries took {:.1}s with kills {kills:?} and {load} busy loops",
        took.as_secs_f64()
    );
    assert!(
        status.success(),
        "rsync failed ({status}) with kills {kills:?}:\n{out}"
    );
    assert!(!kills.is_empty(), "nothing was killed: rsync took {took:?}");
    s.cluster
        .wait_registered(Duration::from_secs(60))
        .await
        .unwrap();
    assert_same_tree(&src, &dst);
    // And as a fresh mount sees it.
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    assert_same_tree(&src, &fresh.path("t/copy"));
    drop(fresh);
    drop(s.mount);
    killed.sort();
    killed.dedup();
    finish_after_kills(s.cluster, &killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_of_a_real_tree_while_servers_are_killed() {
    if !can_run_posix() || !have("rsync") {
        return;
    }
    rsync_while_killing("posix-rsync-kills", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_of_a_real_tree_while_servers_are_killed_under_cpu_load() {
    if !can_run_posix() || !have("rsync") {
        return;
    }
    let busy = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    rsync_while_killing("posix-rsync-load", busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_init_add_commit_log_status_and_clone() {
    if !can_run_posix() || !have("git") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("posix-git").await;
    let t = s.mount.path("t");
    let repo = t.join("repo");
    std::fs::create_dir(&repo).unwrap();
    // Some sources, an executable, a symlink, nested directories.
    for d in ["src", "src/fs", "docs"] {
        std::fs::create_dir_all(repo.join(d)).unwrap();
        for f in 0..12 {
            let p = format!("{d}/file{f}.txt");
            let mut text = String::new();
            for l in 0..(f * 40 + 3) {
                writeln!(text, "line {l} of {p}").unwrap();
            }
            std::fs::write(repo.join(&p), text).unwrap();
        }
    }
    sh(
        &repo,
        "printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh && ln -s src/file1.txt link",
    );
    let git = "git -c user.name=Tester -c user.email=tester@example.com \
               -c init.defaultBranch=main -c core.fsync=all";
    let env = format!(
        "export HOME={} GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null; ",
        s.local.display()
    );
    sh(
        &repo,
        &format!("{env}{git} init -q && {git} add . && {git} commit -q -m first"),
    );
    let log = sh(&repo, &format!("{env}{git} log --format=%s"));
    assert_eq!(log, "first\n");
    assert_eq!(sh(&repo, &format!("{env}{git} status --porcelain")), "");
    // Reflogs are appended to, which a linked file cannot be: without them, git commits
    // on (its other files are replaced through renames, or written once).
    sh(
        &repo,
        &format!("{env}rm -r .git/logs && {git} config core.logAllRefUpdates false"),
    );
    // A change, a removal and a rename: a second commit.
    sh(
        &repo,
        &format!(
            "{env}cat docs/file0.txt > {edit} && echo more >> {edit} && cp {edit} docs/file0.txt && \
             {git} rm -q src/file3.txt && {git} mv src/file4.txt src/renamed.txt && \
             {git} commit -q -a -m second",
            edit = s.local.join("edit").display()
        ),
    );
    assert_eq!(
        sh(&repo, &format!("{env}{git} log --format=%s")),
        "second\nfirst\n"
    );
    assert_eq!(sh(&repo, &format!("{env}{git} status --porcelain")), "");
    assert_eq!(
        sh(
            &repo,
            &format!("{env}{git} diff --name-status HEAD~1 HEAD | sort")
        ),
        "D\tsrc/file3.txt\nM\tdocs/file0.txt\nR100\tsrc/file4.txt\tsrc/renamed.txt\n"
    );
    sh(&repo, &format!("{env}{git} fsck --strict --no-progress"));
    // A local clone (git falls back from hard links to copies) checks out the same files.
    sh(&t, &format!("{env}{git} clone -q repo clone"));
    sh(&t, "diff -r --no-dereference -x .git repo clone");
    assert_eq!(sh(&t, "./clone/run.sh"), "hi\n");
    assert_eq!(sh(&t, "readlink clone/link"), "src/file1.txt\n");
    done(s).await;
}
