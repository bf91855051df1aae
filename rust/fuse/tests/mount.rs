//! eggsfuse used like a user would: a real cluster, a real FUSE mount, real programs (cp,
//! rsync, tar, find, du, python3).
//!
//! Needs root and /dev/fuse, and the server binaries built (`cargo build --bins`); skipped
//! otherwise. The tests take one lock so that only one cluster runs at a time.

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

use common::{can_run, have, python, random_bytes, setup, sh, Mount, ONE_AT_A_TIME, SPAN, STRIPE};
use eggs_protocol::Name;
use eggs_tests::{finish, finish_after_kills};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_span_and_stripe_boundaries_round_trip() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-sizes").await;
    let t = s.mount.path("t");
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        STRIPE - 1,
        STRIPE,
        STRIPE + 1,
        4 * STRIPE + 3,
        SPAN - 1,
        SPAN,
        SPAN + 1,
        3 * SPAN + 12345,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, i as u64);
        let src = s.local.join(format!("f{size}"));
        std::fs::write(&src, &data).unwrap();
        sh(&t, &format!("cp {} f{size}", src.display()));
        // Through the mount, and through the client library.
        assert!(
            std::fs::read(t.join(format!("f{size}")))
                .unwrap_or_else(|e| panic!("reading f{size}: {e}"))
                == data,
            "{size}"
        );
        let got = s
            .client
            .read_file(s.client.resolve(&format!("/t/f{size}")).await.unwrap());
        assert!(got.await.unwrap() == data, "client read of {size}");
        assert_eq!(
            std::fs::metadata(t.join(format!("f{size}"))).unwrap().len(),
            size as u64
        );
    }
    // Reads at odd offsets and lengths, crossing stripes and spans.
    let size = 3 * SPAN + 12345;
    python(
        &t,
        &format!(
            r#"
import os, random
a = open("{}", "rb").read()
f = os.open("f{size}", os.O_RDONLY)
r = random.Random(5)
for _ in range(300):
    off = r.randrange(0, len(a) + 10)
    n = r.randrange(0, 3 * {STRIPE})
    assert os.pread(f, n, off) == a[off:off + n], (off, n)
"#,
            s.local.join(format!("f{size}")).display()
        ),
    );
    drop(s.mount);
    finish(s.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_tools_work_on_the_mount() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-tools").await;
    let t = s.mount.path("t");
    // A tree of many files, some in blocks, with a symlink.
    let src = s.local.join("src");
    for d in 0..10 {
        let dir = src.join(format!("d{d}")).join("sub");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let size = (d * 31 + f * 977) % 9000 + (f % 7) * 20_000;
            std::fs::write(
                dir.join(format!("f{f}")),
                random_bytes(size, (d * 100 + f) as u64),
            )
            .unwrap();
        }
    }
    std::os::unix::fs::symlink("d0/sub/f1", src.join("link")).unwrap();
    let srcs = src.display();

    sh(&t, &format!("cp -r {srcs} cp && diff -r {srcs} cp"));
    if have("rsync") {
        sh(&t, &format!("rsync -a {srcs}/ rs/ && diff -r {srcs} rs"));
        // Times were kept, directories' too, so a second run changes nothing at all.
        let out = sh(&t, &format!("rsync -a --itemize-changes {srcs}/ rs/"));
        assert!(out.trim().is_empty(), "second rsync changed:\n{out}");
    }
    sh(
        &t,
        &format!(
            "mkdir tar && (cd {srcs} && tar cf - .) | (cd tar && tar xf -) && diff -r {srcs} tar"
        ),
    );
    let tarball = s.local.join("back.tar");
    sh(
        &t,
        &format!(
            "tar cf {} -C tar . && mkdir {}/untar && tar xf {} -C {}/untar && diff -r {srcs} {}/untar",
            tarball.display(),
            s.local.display(),
            tarball.display(),
            s.local.display(),
            s.local.display()
        ),
    );
    assert_eq!(sh(&t, "find cp -type f | wc -l").trim(), "300");
    assert_eq!(sh(&t, "readlink cp/link").trim(), "d0/sub/f1");
    sh(&t, "cmp cp/link cp/d0/sub/f1");
    assert!(sh(&t, "du -sk cp | cut -f1").trim().parse::<u64>().unwrap() > 1000);

    // Renames within and across directories, over existing files.
    sh(
        &t,
        "mkdir a b && for i in $(seq 1 100); do echo $i > a/$i; done && \
         for i in $(seq 1 100); do mv a/$i b/x$i; done && mv b/x1 b/x2 && \
         test $(ls a | wc -l) = 0 && test $(ls b | wc -l) = 99 && test $(cat b/x2) = 1 && \
         mv b a/b && test -d a/b && test $(cat a/b/x3) = 3",
    );
    sh(&t, "rm -r cp a && test ! -e cp && test ! -e a");
    sh(
        &t,
        "ln -s /nowhere dangling && test -L dangling && test ! -e dangling",
    );
    assert!(Command::new("sh")
        .args(["-c", "ln -s x dangling"])
        .current_dir(&t)
        .status()
        .is_ok_and(|s| !s.success()));

    let st = nix_statvfs(&t);
    assert!(st > 0, "statfs reports capacity");

    python(
        &t,
        r#"
with open("py.txt", "w") as f:
    f.write("hello " * 1000)
assert open("py.txt").read() == "hello " * 1000
import os, time
os.utime("py.txt", (1000000000, 1200000000))
assert int(os.stat("py.txt").st_mtime) == 1200000000, os.stat("py.txt")
"#,
    );
    drop(s.mount);
    finish(s.cluster).await;
}

/// `stat -c %Y` of `rel` under `cwd`: mtime in whole seconds.
fn mtime_s(cwd: &Path, rel: &str) -> i64 {
    let out = sh(cwd, &format!("stat -c %Y {rel}"));
    out.trim().parse().expect("stat prints seconds")
}

/// Whether `stat -c %Y` of `rel` shows at least `min_s` within 10 s.
fn mtime_reaches(cwd: &Path, rel: &str, min_s: i64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if mtime_s(cwd, rel) >= min_s {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_mtime_can_be_set_and_entries_change_it() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-dirtime").await;
    let t = s.mount.path("t");
    sh(&t, "mkdir -p d/sub && echo x > d/f");
    sh(&t, "touch -d '2001-02-03 04:05:06 UTC' d");
    assert_eq!(mtime_s(&t, "d"), 981_173_106);
    // Kept by the shard, not only in the kernel's attribute cache; in ns as given.
    sh(&t, "touch -d '@1000000000.123456789' d/sub");
    let id = s.client.resolve("/t/d/sub").await.unwrap();
    match s.client.stat(id).await.unwrap() {
        eggs_client::Stat::Directory { mtime, .. } => {
            assert_eq!(mtime.0, 1_000_000_000_123_456_789)
        }
        other => panic!("a directory: {other:?}"),
    }
    // Setting only the atime of a directory changes nothing (directories have none).
    sh(&t, "touch -a -d '@5' d/sub");
    assert_eq!(mtime_s(&t, "d/sub"), 1_000_000_000);
    // Adding and removing entries makes the mtime now again.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The new file is linked when its release arrives, after `echo` has returned, and the
    // kernel may serve d's attributes from its cache for a moment: poll.
    sh(&t, "echo y > d/g");
    assert!(
        mtime_reaches(&t, "d", now_s - 5),
        "creating a file touches d"
    );
    sh(&t, "touch -d '@1000000000' d && rm d/g");
    assert!(
        mtime_reaches(&t, "d", now_s - 5),
        "unlinking a file touches d"
    );
    drop(s.mount);
    finish(s.cluster).await;
}

fn nix_statvfs(p: &Path) -> u64 {
    let out = sh(p, "stat -f -c '%b %S' .");
    let mut it = out.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_appears_when_its_last_descriptor_closes_and_bad_writes_fail() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-semantics").await;
    let t = s.mount.path("t");
    std::fs::write(t.join("old"), b"old contents").unwrap();
    let Some(_) = python(
        &t,
        r#"
import os, errno, sys
def err(f):
    try:
        f()
    except OSError as e:
        return e.errno
    return 0

# Invisible until the last descriptor (here a dup, then a forked child's) is closed.
fd = os.open("new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
os.write(fd, b"a" * 5000)
assert "new" not in os.listdir("."), os.listdir(".")
fd2 = os.dup(fd)
os.close(fd)
os.write(fd2, b"b" * 5000)
assert "new" not in os.listdir(".")
pid = os.fork()
if pid == 0:
    os.write(fd2, b"c" * 10)
    os._exit(0)
os.waitpid(pid, 0)
assert "new" not in os.listdir(".")
# Writing anywhere but at the end.
assert err(lambda: os.pwrite(fd2, b"x", 0)) == errno.EOPNOTSUPP
# Truncating within what is not stored yet is fine.
os.ftruncate(fd2, 10005)
os.close(fd2)
assert "new" in os.listdir(".")
assert open("new", "rb").read() == b"a" * 5000 + b"b" * 5000 + b"c" * 5

# Existing files cannot be written into, only replaced.
assert err(lambda: open("old", "r+b")) == errno.EPERM
assert err(lambda: open("old", "ab")) == errno.EPERM
assert err(lambda: os.truncate("old", 3)) == errno.EPERM
assert open("old", "rb").read() == b"old contents"
with open("old", "wb") as f:
    f.write(b"new contents")
assert open("old", "rb").read() == b"new contents"
print("ok")
"#,
    ) else {
        drop(s.mount);
        return finish(s.cluster).await;
    };
    // Another client sees the file too, and the replaced one stays as a snapshot edge.
    let edges = s
        .client
        .full_readdir(s.client.resolve("/t").await.unwrap())
        .await
        .unwrap();
    let old = Name::new("old").unwrap();
    assert_eq!(edges.iter().filter(|e| e.name == old).count(), 2);
    // A file being written is invisible to other clients until it is closed.
    let mut f = std::fs::File::create(t.join("slow")).unwrap();
    std::io::Write::write_all(&mut f, b"partial").unwrap();
    let dir = s.client.resolve("/t").await.unwrap();
    let slow = Name::new("slow").unwrap();
    assert!(s.client.lookup(dir, &slow).await.is_err());
    drop(f);
    assert_eq!(std::fs::read(t.join("slow")).unwrap(), b"partial");
    assert!(s.client.lookup(dir, &slow).await.is_ok());
    drop(s.mount);
    finish(s.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_ten_thousand_entries() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-bigdir").await;
    let t = s.mount.path("t");
    sh(&t, "mkdir big && cd big && seq 1 10000 | xargs touch");
    assert_eq!(sh(&t, "ls big | wc -l").trim(), "10000");
    assert_eq!(sh(&t, "ls -l big | grep -c '^-'").trim(), "10000");
    assert_eq!(sh(&t, "find big -type f | wc -l").trim(), "10000");
    sh(&t, "rm -r big && test ! -e big");
    drop(s.mount);
    finish(s.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_and_reads_with_block_services_down() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = setup("fuse-parity").await;
    let t = s.mount.path("t");
    let size = 6 * SPAN + 777;
    let data = random_bytes(size, 99);
    let src = s.local.join("data");
    std::fs::write(&src, &data).unwrap();
    sh(
        &t,
        &format!("cp {} data && cp {} small", src.display(), src.display()),
    );
    // Four readers of one file at once.
    sh(
        &t,
        &format!(
            "for i in 1 2 3 4; do cmp data {} & done; wait; for j in $(jobs -p); do wait $j || exit 1; done",
            src.display()
        ),
    );
    // Two of the seven block services die; a fresh mount (nothing cached) still reads
    // everything, rebuilding from parity.
    let killed = vec!["blocks-0".to_string(), "blocks-3".to_string()];
    for k in &killed {
        s.cluster.kill(k, eggs_run::Signal::SIGKILL).unwrap();
    }
    drop(s.mount);
    let fresh = Mount::new(s.cluster.shuckle_addr(), &s.cluster.dir().join("mnt2"));
    let t = fresh.path("t");
    sh(
        &t,
        &format!(
            "cmp data {} & cmp small {} & wait",
            src.display(),
            src.display()
        ),
    );
    assert!(std::fs::read(t.join("data")).unwrap() == data);
    drop(fresh);
    finish_after_kills(s.cluster, &killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_mount_is_cleaned_up_on_the_next_start() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup("fuse-stale").await;
    std::fs::write(s.mount.path("t/kept"), b"kept").unwrap();
    // The link follows the close (the kernel sends the release after close returns).
    let t0 = Instant::now();
    while s.client.resolve("/t/kept").await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the file gets linked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = s.mount.dir.clone();
    let mut m = s.mount;
    // A crash: the mount stays, answering "transport endpoint is not connected".
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    assert_eq!(
        eggs_fuse::statfs_errno(&dir),
        Some(nix::errno::Errno::ENOTCONN as i32)
    );
    std::mem::forget(m);
    let again = Mount::new(s.cluster.shuckle_addr(), &dir);
    assert_eq!(std::fs::read(again.path("t/kept")).unwrap(), b"kept");
    drop(again);
    assert!(!eggs_fuse::is_mounted(&dir));
    finish(s.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eggsrun_mounts_under_its_directory_and_unmounts_on_exit() {
    let eggsrun = eggs_run::default_bin_dir().join("eggsrun");
    if !can_run() || !eggsrun.is_file() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = eggs_tests::test_dir("fuse-eggsrun");
    let mut child = Command::new(&eggsrun)
        .args(["--shuckle-port", "0", "--failure-domains", "0", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("eggsrun starts");
    let mnt = dir.join("fuse").join("mnt");
    let t0 = Instant::now();
    while !eggs_fuse::is_mounted(&mnt) || eggs_fuse::statfs_errno(&mnt).is_some() {
        if t0.elapsed() > Duration::from_secs(60) || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            panic!("eggsrun did not mount {}", mnt.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(mnt.join("hello"), b"hello").unwrap();
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"hello");
    eggs_run::send_signal(child.id(), eggs_run::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    // The detach may still be settling in the kernel when eggsrun exits.
    let t1 = Instant::now();
    while eggs_fuse::is_mounted(&mnt) && t1.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mounted = eggs_fuse::is_mounted(&mnt);
    if mounted {
        eggs_fuse::lazy_unmount(&mnt);
    }
    assert!(status.success(), "eggsrun: {status}");
    assert!(!mounted, "eggsrun left the mount behind");
    let _ = std::fs::remove_dir_all(&dir);
}
