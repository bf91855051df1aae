//! `tree`: the directory hierarchy below a path, drawn with box characters.

use crate::error::Result;
use eggs_client::{Client, DirEntry};
use eggs_protocol::InodeId;
use std::io::Write;

/// The entries of a directory still to draw, and the prefix their lines start with.
struct Level {
    entries: Vec<DirEntry>,
    next: usize,
    prefix: String,
}

#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub dirs: u64,
    pub files: u64,
}

pub async fn tree(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    writeln!(out, "{path}")?;
    let mut counts = Counts::default();
    if id.is_dir() {
        let mut stack = vec![level(c, id, String::new()).await?];
        while let Some(top) = stack.last_mut() {
            let Some(e) = top.entries.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let last = top.next == top.entries.len();
            writeln!(out, "{}", line(&top.prefix, last, &e))?;
            if e.target_id.is_dir() {
                counts.dirs += 1;
                let prefix = format!("{}{}", top.prefix, if last { "    " } else { "│   " });
                stack.push(level(c, e.target_id, prefix).await?);
            } else {
                counts.files += 1;
            }
        }
    }
    writeln!(out, "\n{}", summary(&counts))?;
    Ok(())
}

async fn level(c: &Client, dir: InodeId, prefix: String) -> Result<Level> {
    let mut entries = c.readdir(dir).await?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Level {
        entries,
        next: 0,
        prefix,
    })
}

pub(crate) fn line(prefix: &str, last: bool, e: &DirEntry) -> String {
    let branch = if last { "└── " } else { "├── " };
    let slash = if e.target_id.is_dir() { "/" } else { "" };
    format!("{prefix}{branch}{}{slash}", e.name)
}

pub(crate) fn summary(c: &Counts) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {}",
        plural(c.dirs, "directory", "directories"),
        plural(c.files, "file", "files")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::{EggsTime, InodeType, Name, ShardId};

    #[test]
    fn lines_and_summary() {
        let e = |name: &str, typ| DirEntry {
            name: Name::new(name).unwrap(),
            target_id: InodeId::new(typ, ShardId(0), 1),
            creation_time: EggsTime(0),
        };
        assert_eq!(line("", false, &e("a", InodeType::Directory)), "├── a/");
        assert_eq!(line("│   ", true, &e("b", InodeType::File)), "│   └── b");
        assert_eq!(
            summary(&Counts { dirs: 1, files: 2 }),
            "1 directory, 2 files"
        );
        assert_eq!(
            summary(&Counts { dirs: 0, files: 1 }),
            "0 directories, 1 file"
        );
    }
}
