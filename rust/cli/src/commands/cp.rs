//! `cp`: files and trees between the local file system and EggsFS, in either direction.
//! Data is streamed span by span; nothing holds a whole file in memory.

use super::io::{is_a_directory, read_to, BlockingReader};
use super::{join, last_name};
use crate::error::{CliError, Result};
use crate::format::size_human;
use eggs_client::{Client, FileWriter};
use eggs_protocol::{EggsError, InodeId, Name};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a `cp` argument points: `eggs:/a/b` is in EggsFS, anything else is local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Eggs(String),
    Local(PathBuf),
}

impl Location {
    pub fn parse(s: &str) -> std::result::Result<Location, String> {
        match s.strip_prefix("eggs:") {
            Some("") => Ok(Location::Eggs("/".into())),
            Some(p) if p.starts_with('/') => Ok(Location::Eggs(p.into())),
            Some(p) => Err(format!(
                "EggsFS paths are absolute: write eggs:/{p}, not eggs:{p}"
            )),
            None if s.is_empty() => Err("empty path".into()),
            None => Ok(Location::Local(PathBuf::from(s))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Eggs(p) => write!(f, "eggs:{p}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpOptions {
    pub recursive: bool,
    pub verbose: bool,
}

/// Files above this size get a progress bar (when stderr is a terminal).
const PROGRESS_MIN: u64 = 4 << 20;

struct Copier<'a> {
    c: &'a Client,
    opts: CpOptions,
    files: u64,
    bytes: u64,
    show_progress: bool,
}

pub async fn cp(
    c: &Client,
    src: &Location,
    dst: &Location,
    opts: CpOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let start = Instant::now();
    let mut cp = Copier {
        c,
        opts,
        files: 0,
        bytes: 0,
        show_progress: std::io::stderr().is_terminal(),
    };
    match (src, dst) {
        (Location::Local(s), Location::Eggs(d)) => cp.upload(s, d).await?,
        (Location::Eggs(s), Location::Local(d)) => cp.download(s, d).await?,
        _ => {
            return Err(CliError::Invalid(
                "exactly one of SRC and DST must be an EggsFS path (eggs:/...)".into(),
            ))
        }
    }
    if opts.verbose {
        writeln!(out, "{}", summary(cp.files, cp.bytes, start.elapsed()))?;
    }
    Ok(())
}

pub(crate) fn summary(files: u64, bytes: u64, took: std::time::Duration) -> String {
    let secs = took.as_secs_f64().max(1e-6);
    let rate = bytes as f64 / (1 << 20) as f64 / secs;
    let s = if files == 1 { "" } else { "s" };
    format!(
        "{files} file{s}, {bytes} bytes ({}) in {secs:.2}s, {rate:.1} MiB/s",
        size_human(bytes)
    )
}

fn local_name(path: &Path) -> Result<&std::ffi::OsStr> {
    path.file_name()
        .filter(|n| *n != "..")
        .ok_or_else(|| CliError::Invalid(format!("{} has no last name", path.display())))
}

fn eggs_name(bytes: &[u8]) -> Result<Name> {
    Name::new(bytes).map_err(|e| {
        CliError::Invalid(format!(
            "{:?} cannot be an EggsFS name: {e}",
            String::from_utf8_lossy(bytes)
        ))
    })
}

fn io_err(what: &Path, e: std::io::Error) -> CliError {
    CliError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", what.display()),
    ))
}

impl Copier<'_> {
    fn bar(&self, size: u64, name: &str) -> Option<ProgressBar> {
        if !self.show_progress || size < PROGRESS_MIN {
            return None;
        }
        let pb = ProgressBar::new(size);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style);
        }
        pb.set_message(name.to_string());
        Some(pb)
    }

    /// Local `src` to EggsFS `dst`.
    async fn upload(&mut self, src: &Path, dst: &str) -> Result<()> {
        let meta = std::fs::metadata(src).map_err(|e| io_err(src, e))?;
        if meta.is_dir() && !self.opts.recursive {
            return Err(CliError::Invalid(format!(
                "{} is a directory (use -r)",
                src.display()
            )));
        }
        let target = match self.c.resolve(dst).await {
            Ok(id) if id.is_dir() => {
                let name = local_name(src)?;
                join(dst, &String::from_utf8_lossy(name.as_bytes()))
            }
            Ok(_) if meta.is_dir() => {
                return Err(CliError::Client(eggs_client::ClientError::Eggs {
                    what: dst.to_string(),
                    err: EggsError::NotADirectory,
                }))
            }
            Ok(_) => dst.to_string(),
            Err(e) if e.eggs() == Some(EggsError::NameNotFound) => dst.to_string(),
            Err(e) => return Err(e.into()),
        };
        if meta.is_dir() {
            let id = self.c.mkdir_p(&target).await?;
            Box::pin(self.upload_tree(src, id, &target)).await
        } else {
            let (owner, name) = self.c.resolve_parent(&target).await?;
            self.upload_file(src, meta.len(), owner, &name, &target)
                .await
        }
    }

    async fn upload_tree(&mut self, src: &Path, dir_id: InodeId, dst: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| io_err(src, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_err(src, e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let raw = e.file_name().into_vec();
            let name = eggs_name(&raw)?;
            let target = join(dst, &name.to_string());
            let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
            if meta.is_dir() {
                let id = match self.c.mkdir_in(dir_id, &name).await {
                    Ok(id) => id,
                    Err(e) if e.eggs() == Some(EggsError::NameExists) => {
                        let found = self.c.lookup(dir_id, &name).await?.target_id;
                        if !found.is_dir() {
                            return Err(CliError::Client(eggs_client::ClientError::Eggs {
                                what: target,
                                err: EggsError::NotADirectory,
                            }));
                        }
                        found
                    }
                    Err(e) => return Err(e.into()),
                };
                Box::pin(self.upload_tree(&path, id, &target)).await?;
            } else if meta.is_file() {
                self.upload_file(&path, meta.len(), dir_id, &name, &target)
                    .await?;
            } else {
                eprintln!(
                    "eggscli: cp: skipping {}: not a regular file or directory",
                    path.display()
                );
            }
        }
        Ok(())
    }

    async fn upload_file(
        &mut self,
        src: &Path,
        size: u64,
        owner: InodeId,
        name: &Name,
        target: &str,
    ) -> Result<()> {
        let file = std::fs::File::open(src).map_err(|e| io_err(src, e))?;
        let pb = self.bar(size, target);
        let bar = pb.clone();
        let mut progress = move |n: u64| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        };
        let r = FileWriter::write_in_with_progress(
            self.c,
            owner,
            name,
            BlockingReader(std::io::BufReader::with_capacity(1 << 20, file)),
            &mut progress,
        )
        .await;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        r?;
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// EggsFS `src` to local `dst`.
    async fn download(&mut self, src: &str, dst: &Path) -> Result<()> {
        let id = self.c.resolve(src).await?;
        if id.is_dir() && !self.opts.recursive {
            return Err(CliError::Invalid(format!("{src} is a directory (use -r)")));
        }
        let target = match std::fs::metadata(dst) {
            Ok(m) if m.is_dir() => {
                let name = if id == InodeId::ROOT {
                    "eggs"
                } else {
                    last_name(src)?
                };
                dst.join(name)
            }
            Ok(_) if id.is_dir() => {
                return Err(CliError::Invalid(format!(
                    "{} exists and is not a directory",
                    dst.display()
                )))
            }
            _ => dst.to_path_buf(),
        };
        if id.is_dir() {
            Box::pin(self.download_tree(id, src, &target)).await
        } else {
            self.download_file(id, src, &target).await
        }
    }

    async fn download_tree(&mut self, dir_id: InodeId, src: &str, dst: &Path) -> Result<()> {
        std::fs::create_dir_all(dst).map_err(|e| io_err(dst, e))?;
        let mut entries = self.c.readdir(dir_id).await?;
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        for e in entries {
            let local = dst.join(std::ffi::OsStr::from_bytes(e.name.as_bytes()));
            let path = join(src, &e.name.to_string());
            if e.target_id.is_dir() {
                Box::pin(self.download_tree(e.target_id, &path, &local)).await?;
            } else {
                self.download_file(e.target_id, &path, &local).await?;
            }
        }
        Ok(())
    }

    /// Writes to a temporary name next to `dst`, renamed into place once complete, so that a
    /// failed copy leaves nothing behind.
    async fn download_file(&mut self, id: InodeId, src: &str, dst: &Path) -> Result<()> {
        if id.is_dir() {
            return Err(is_a_directory(src));
        }
        let size = match self.c.stat(id).await? {
            eggs_client::Stat::File { size, .. } => size,
            eggs_client::Stat::Directory { .. } => return Err(is_a_directory(src)),
        };
        let name = local_name(dst)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".eggscli-{}.tmp", std::process::id()));
        let tmp = dst.with_file_name(tmp_name);
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let pb = self.bar(size, src);
        let r = async {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut done = 0u64;
            let mut progress = |n: u64| {
                done += n;
                if let Some(b) = &pb {
                    b.set_position(done);
                }
            };
            let n = read_to(self.c, id, &mut w, &mut progress).await?;
            let file = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| io_err(&tmp, e))?;
            std::fs::rename(&tmp, dst).map_err(|e| io_err(dst, e))?;
            Ok::<u64, CliError>(n)
        }
        .await;
        if let Some(pb) = &pb {
            pb.finish_and_clear();
        }
        match r {
            Ok(n) => {
                self.files += 1;
                self.bytes += n;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("eggs:/a/b"),
            Ok(Location::Eggs("/a/b".into()))
        );
        assert_eq!(Location::parse("eggs:"), Ok(Location::Eggs("/".into())));
        assert!(Location::parse("eggs:a").is_err());
        assert!(Location::parse("").is_err());
        assert_eq!(
            Location::parse("./x/eggs:/y"),
            Ok(Location::Local("./x/eggs:/y".into()))
        );
        assert_eq!(
            Location::parse("/tmp/f"),
            Ok(Location::Local("/tmp/f".into()))
        );
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary(1, 1 << 20, Duration::from_secs(2)),
            "1 file, 1048576 bytes (1.0M) in 2.00s, 0.5 MiB/s"
        );
        assert!(summary(3, 0, Duration::ZERO).starts_with("3 files, 0 bytes (0)"));
    }

    #[test]
    fn names() {
        assert_eq!(local_name(Path::new("/a/b")).unwrap(), "b");
        assert!(local_name(Path::new("/")).is_err());
        assert!(eggs_name(b"ok").is_ok());
        assert!(eggs_name(b"a/b").is_err());
    }
}
