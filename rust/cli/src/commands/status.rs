//! `status`: what shuckle knows about shards, the CDC and block services.

use crate::error::Result;
use crate::format::{age, block_service_flags, failure_domain, size_human, storage_class, table};
use eggs_client::ShuckleClient;
use eggs_protocol::shuckle::{BlockServiceInfo, BlockServicesReq, CdcReq, ShardInfo, ShardsReq};
use eggs_protocol::{Addr, EggsTime, ShardId};
use std::io::Write;

pub async fn status(shuckle: &ShuckleClient, out: &mut dyn Write) -> Result<()> {
    let shards = shuckle.request(ShardsReq {}).await?;
    let cdc = shuckle.request(CdcReq {}).await?;
    let services = shuckle.request(BlockServicesReq {}).await?;
    let now = EggsTime::now();
    writeln!(out, "shuckle: {}", shuckle.addr())?;
    for l in shard_lines(&shards.shards, now) {
        writeln!(out, "{l}")?;
    }
    if cdc.addr.port == 0 {
        writeln!(out, "cdc: not registered")?;
    } else {
        writeln!(
            out,
            "cdc: {}, last seen {}",
            cdc.addr,
            age(now, cdc.last_seen)
        )?;
    }
    for l in block_service_lines(&services.services, now) {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// One line per address serving shards (with the oldest heartbeat among them), then the
/// shards nobody serves.
pub(crate) fn shard_lines(shards: &[ShardInfo], now: EggsTime) -> Vec<String> {
    let mut groups: Vec<(Addr, Vec<u8>, EggsTime)> = Vec::new();
    let mut missing = Vec::new();
    for (id, s) in ShardId::all().zip(shards) {
        let id = id.0;
        if s.addr.port == 0 {
            missing.push(id);
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == s.addr) {
            Some(g) => {
                g.1.push(id);
                g.2 = g.2.min(s.last_seen);
            }
            None => groups.push((s.addr, vec![id], s.last_seen)),
        }
    }
    let registered = shards.len() - missing.len();
    let mut lines = vec![format!(
        "shards: {registered} of {} registered",
        shards.len()
    )];
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(addr, ids, seen)| {
            vec![
                format!("  {addr}"),
                format!("{} shards", ids.len()),
                eggs_protocol::ids::compact_shard_ranges(ids),
                format!("last seen {}", age(now, *seen)),
            ]
        })
        .collect();
    lines.extend(table(&rows, &[false, true, false]));
    if !missing.is_empty() {
        lines.push(format!(
            "  not registered: {}",
            eggs_protocol::ids::compact_shard_ranges(&missing)
        ));
    }
    lines
}

pub(crate) fn block_service_lines(services: &[BlockServiceInfo], now: EggsTime) -> Vec<String> {
    if services.is_empty() {
        return vec!["block services: none registered".into()];
    }
    let mut rows = vec![[
        "  ID", "ADDR", "CLASS", "FLAGS", "CAPACITY", "FREE", "BLOCKS", "DOMAIN", "SEEN", "PATH",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(services.iter().map(|s| {
        vec![
            format!("  {:016x}", s.id.0),
            s.addr.to_string(),
            storage_class(s.storage_class).to_string(),
            block_service_flags(s.flags),
            size_human(s.capacity_bytes),
            size_human(s.available_bytes),
            s.blocks.to_string(),
            failure_domain(&s.failure_domain),
            age(now, s.last_seen),
            s.path.clone(),
        ]
    }));
    let mut lines = vec![format!("block services: {}", services.len())];
    let right = [false, false, false, false, true, true, true];
    lines.extend(table(&rows, &right));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::policy::StorageClass;
    use eggs_protocol::BlockServiceId;

    const NOW: EggsTime = EggsTime(1_000_000_000_000);

    fn addr(port: u16) -> Addr {
        Addr {
            ip: [127, 0, 0, 1],
            port,
        }
    }

    #[test]
    fn shards_grouped_by_address() {
        let mut shards: Vec<ShardInfo> = (0..256)
            .map(|i| ShardInfo {
                addr: addr(if i < 128 { 4000 } else { 5000 }),
                last_seen: EggsTime(NOW.0 - 500_000_000),
            })
            .collect();
        shards[3].last_seen = EggsTime(NOW.0 - 2_000_000_000);
        shards[200].addr = Addr::default();
        let lines = shard_lines(&shards, NOW);
        assert_eq!(
            lines,
            [
                "shards: 255 of 256 registered",
                "  127.0.0.1:4000  128 shards  0..=127              last seen 2.0s ago",
                "  127.0.0.1:5000  127 shards  128..=199,201..=255  last seen 0.5s ago",
                "  not registered: 200",
            ]
        );
    }

    #[test]
    fn block_services() {
        assert_eq!(
            block_service_lines(&[], NOW),
            ["block services: none registered"]
        );
        let mut fd = [0u8; 16];
        fd[..3].copy_from_slice(b"rk1");
        let s = BlockServiceInfo {
            id: BlockServiceId(0xabc),
            addr: addr(6000),
            storage_class: StorageClass::Hdd,
            failure_domain: fd,
            flags: 1,
            capacity_bytes: 4 << 40,
            available_bytes: 1 << 40,
            blocks: 42,
            path: "/disks/1".into(),
            last_seen: EggsTime(NOW.0 - 1_000_000_000),
        };
        let lines = block_service_lines(&[s], NOW);
        assert_eq!(lines[0], "block services: 1");
        assert!(lines[2].contains("0000000000000abc"), "{}", lines[2]);
        assert!(lines[2].contains("no-write"));
        assert!(lines[2].contains("4.0T"));
        assert!(lines[2].contains("rk1"));
        assert!(lines[2].ends_with("/disks/1"));
    }
}
