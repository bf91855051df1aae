//! `stat` and `policy get`: what an inode is, and a directory's policies.

use crate::accounts::Accounts;
use crate::error::{CliError, Result};
use crate::format::{
    device, failure_domain, mode_string, mode_type_name, parity, policies, size_exact,
    storage_class, table,
};
use eggs_client::{Client, Stat};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::posix::{PERM_BITS, S_IFLNK, S_IFREG};
use eggs_protocol::shard::{FetchedSpan, SpanBody};
use eggs_protocol::shuckle::{BlockServiceInfo, BlockServicesReq};
use eggs_protocol::InodeId;
use std::io::Write;

pub async fn stat(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    let st = c.stat(id).await?;
    for l in table(&stat_rows(path, id, &st, &Accounts::load()), &[]) {
        writeln!(out, "{l}")?;
    }
    match st {
        Stat::Directory { info, .. } => write_policies(c, id, &info, out).await?,
        // Special files (FIFOs, sockets, devices) have no contents.
        Stat::File { attrs, .. } if matches!(attrs.file_type(), S_IFREG | S_IFLNK) => {
            write_spans(c, id, out).await?
        }
        Stat::File { .. } => {}
    }
    Ok(())
}

/// `key: value` rows: the inode, its mode (octal and as `ls -l` shows it), owner and group
/// (with their names here, where known), size or device numbers, and times.
pub(crate) fn stat_rows(
    path: &str,
    id: InodeId,
    st: &Stat,
    accounts: &Accounts,
) -> Vec<Vec<String>> {
    let attrs = st.attrs();
    let named = |id: u32, name: Option<&str>| match name {
        Some(n) => format!("{id} ({n})"),
        None => id.to_string(),
    };
    let mut rows = vec![
        row("path", path.to_string()),
        row("id", id.to_string()),
        row("type", mode_type_name(attrs.mode).to_string()),
        row("shard", id.shard().to_string()),
        row(
            "mode",
            format!(
                "{:04o} ({})",
                attrs.mode & PERM_BITS,
                mode_string(attrs.mode)
            ),
        ),
        row("uid", named(attrs.uid, accounts.user_name(attrs.uid))),
        row("gid", named(attrs.gid, accounts.group_name(attrs.gid))),
    ];
    match st {
        Stat::File { size, rdev, .. } => {
            if attrs.is_device() {
                rows.push(row("rdev", format!("{} ({rdev:#x})", device(*rdev))));
            } else {
                rows.push(row("size", size.to_string()));
            }
        }
        Stat::Directory { owner_id, .. } => rows.push(row("owner", owner(id, *owner_id))),
    }
    let (atime, mtime, ctime) = st.times();
    rows.push(row("atime", atime.to_string()));
    rows.push(row("mtime", mtime.to_string()));
    rows.push(row("ctime", ctime.to_string()));
    rows
}

/// Every span of a file, and for spans stored in blocks where each block is.
async fn write_spans(c: &Client, id: InodeId, out: &mut dyn Write) -> Result<()> {
    let spans = c.file_spans(id).await?;
    let services = if spans.iter().any(|s| matches!(s.body, SpanBody::Blocks(_))) {
        c.shuckle().request(BlockServicesReq {}).await?.services
    } else {
        Vec::new()
    };
    for l in span_lines(&spans, &services) {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

pub(crate) fn span_lines(spans: &[FetchedSpan], services: &[BlockServiceInfo]) -> Vec<String> {
    let mut lines = vec![format!("spans: {}", spans.len())];
    for s in spans {
        let head = format!("  at {} size {} crc {:08x}", s.byte_offset, s.size, s.crc);
        match &s.body {
            SpanBody::Inline(_) => lines.push(format!("{head}: inline")),
            SpanBody::Blocks(b) => {
                lines.push(format!(
                    "{head}: {} {}, {} stripes x {} cells",
                    parity(b.parity),
                    storage_class(b.storage_class),
                    b.stripes,
                    size_exact(b.cell_size.into()),
                ));
                let mut rows = vec![["    BLOCK", "SERVICE", "ADDR", "DOMAIN", "ID", "CRC"]
                    .map(String::from)
                    .to_vec()];
                for (i, fb) in b.blocks.iter().enumerate() {
                    let kind = if i < usize::from(b.parity.data) {
                        "d"
                    } else {
                        "p"
                    };
                    let domain = services
                        .iter()
                        .find(|bs| bs.id == fb.block_service_id)
                        .map_or_else(|| "?".into(), |bs| failure_domain(&bs.failure_domain));
                    rows.push(vec![
                        format!("    {i} ({kind})"),
                        format!("{:016x}", fb.block_service_id.0),
                        fb.addr.to_string(),
                        domain,
                        format!("{:016x}", fb.block_id.0),
                        format!("{:08x}", fb.crc),
                    ]);
                }
                lines.extend(table(&rows, &[]));
            }
        }
    }
    lines
}

/// The directory's effective policies, each marked as set here or inherited.
pub async fn policy_get(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    let own = own_info(c, path, id).await?;
    write_policies(c, id, &own, out).await
}

async fn write_policies(
    c: &Client,
    id: InodeId,
    own: &DirectoryInfo,
    out: &mut dyn Write,
) -> Result<()> {
    let effective = c.effective_directory_info(id).await?;
    writeln!(out, "policies:")?;
    for l in policies(own, &effective) {
        writeln!(out, "  {l}")?;
    }
    Ok(())
}

/// The policies a directory sets itself.
pub(crate) async fn own_info(c: &Client, path: &str, id: InodeId) -> Result<DirectoryInfo> {
    match c.stat(id).await? {
        Stat::Directory { info, .. } => Ok(info),
        Stat::File { .. } => Err(CliError::Client(eggs_client::ClientError::Eggs {
            what: format!("policies of {path}"),
            err: eggs_protocol::EggsError::NotADirectory,
        })),
    }
}

fn row(k: &str, v: String) -> Vec<String> {
    vec![format!("{k}:"), v]
}

fn owner(id: InodeId, owner: InodeId) -> String {
    match (owner.is_null(), id == InodeId::ROOT) {
        (false, _) => owner.to_string(),
        (true, true) => "none (root)".into(),
        (true, false) => "none (removed)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::policy::{Parity, StorageClass};
    use eggs_protocol::shard::{BlocksSpan, FetchedBlock};
    use eggs_protocol::{Addr, BlockId, BlockServiceId, EggsTime};

    #[test]
    fn spans() {
        let mut fd = [0u8; 16];
        fd[..3].copy_from_slice(b"fd1");
        let svc = BlockServiceInfo {
            id: BlockServiceId(0xab),
            addr: Addr {
                ip: [127, 0, 0, 1],
                port: 7000,
            },
            storage_class: StorageClass::Flash,
            failure_domain: fd,
            flags: 0,
            capacity_bytes: 0,
            available_bytes: 0,
            blocks: 0,
            path: "/x".into(),
            last_seen: EggsTime(0),
        };
        let block = |svc: u64, id: u64| FetchedBlock {
            block_service_id: BlockServiceId(svc),
            addr: Addr {
                ip: [127, 0, 0, 1],
                port: 7000,
            },
            block_id: BlockId(id),
            crc: 0xdeadbeef,
        };
        let spans = [
            FetchedSpan {
                byte_offset: 0,
                size: 10,
                crc: 1,
                body: SpanBody::Inline(vec![0; 10]),
            },
            FetchedSpan {
                byte_offset: 10,
                size: 5000,
                crc: 2,
                body: SpanBody::Blocks(BlocksSpan {
                    parity: Parity { data: 1, parity: 1 },
                    storage_class: StorageClass::Flash,
                    stripes: 1,
                    cell_size: 8192,
                    blocks: vec![block(0xab, 5), block(0xcd, 6)],
                }),
            },
        ];
        let lines = span_lines(&spans, &[svc]);
        assert_eq!(lines[0], "spans: 2");
        assert_eq!(lines[1], "  at 0 size 10 crc 00000001: inline");
        assert_eq!(
            lines[2],
            "  at 10 size 5000 crc 00000002: mirrored 1+1 flash, 1 stripes x 8K cells"
        );
        assert!(lines[3].starts_with("    BLOCK"), "{}", lines[3]);
        assert!(
            lines[4].contains("00000000000000ab  127.0.0.1:7000  fd1"),
            "{}",
            lines[4]
        );
        assert!(
            lines[4].ends_with("0000000000000005  deadbeef"),
            "{}",
            lines[4]
        );
        assert!(lines[5].starts_with("    1 (p)"), "{}", lines[5]);
        assert!(lines[5].contains("  ?  "), "{}", lines[5]);
    }

    #[test]
    fn rows() {
        use eggs_protocol::posix::{S_IFCHR, S_IFDIR, S_ISGID};
        use eggs_protocol::{InodeAttrs, InodeType, ShardId};
        let t = |s: u64| EggsTime(1_700_000_000_000_000_000 + s * 1_000_000_000);
        let accounts = Accounts::parse("root:x:0:0::/:\n", "tty:x:5:\n");
        let lines =
            |id, st: &Stat| -> Vec<String> { table(&stat_rows("/p", id, st, &accounts), &[]) };
        let f = InodeId::new(InodeType::File, ShardId(2), 9);
        let file = Stat::File {
            size: 4,
            mtime: t(2),
            atime: t(1),
            ctime: t(3),
            attrs: InodeAttrs {
                mode: S_IFREG | 0o640,
                uid: 1234,
                gid: 5678,
            },
            rdev: 0,
        };
        assert_eq!(
            lines(f, &file),
            [
                "path:   /p".to_string(),
                format!("id:     {f}"),
                "type:   file".into(),
                "shard:  002".into(),
                "mode:   0640 (-rw-r-----)".into(),
                "uid:    1234".into(),
                "gid:    5678".into(),
                "size:   4".into(),
                "atime:  2023-11-14T22:13:21.000000000Z".into(),
                "mtime:  2023-11-14T22:13:22.000000000Z".into(),
                "ctime:  2023-11-14T22:13:23.000000000Z".into(),
            ]
        );
        let tty = Stat::File {
            size: 0,
            mtime: t(0),
            atime: t(0),
            ctime: t(0),
            attrs: InodeAttrs {
                mode: S_IFCHR | 0o620,
                uid: 0,
                gid: 5,
            },
            rdev: (4 << 8) | 1,
        };
        let l = lines(f, &tty);
        assert_eq!(l[2], "type:   char-device");
        assert_eq!(l[4], "mode:   0620 (crw--w----)");
        assert_eq!(
            l[5..8],
            [
                "uid:    0 (root)",
                "gid:    5 (tty)",
                "rdev:   4, 1 (0x401)"
            ]
        );
        let dir = Stat::Directory {
            owner_id: InodeId::ROOT,
            mtime: t(0),
            info: Default::default(),
            atime: t(0),
            ctime: t(0),
            attrs: InodeAttrs {
                mode: S_IFDIR | S_ISGID | 0o775,
                uid: 0,
                gid: 0,
            },
        };
        let d = InodeId::new(InodeType::Directory, ShardId(2), 10);
        let l = lines(d, &dir);
        assert_eq!(l[2], "type:   dir");
        assert_eq!(l[4], "mode:   2775 (drwxrwsr-x)");
        assert_eq!(l[7], format!("owner:  {}", InodeId::ROOT));
    }

    #[test]
    fn owners() {
        let d = InodeId::new(
            eggs_protocol::InodeType::Directory,
            eggs_protocol::ShardId(3),
            9,
        );
        assert_eq!(owner(InodeId::ROOT, InodeId::NULL), "none (root)");
        assert_eq!(owner(d, InodeId::NULL), "none (removed)");
        assert_eq!(owner(d, InodeId::ROOT), InodeId::ROOT.to_string());
    }
}
