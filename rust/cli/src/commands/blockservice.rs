//! `blockservice list` and `blockservice flag`: the block services shuckle knows, and the
//! flags operators set on them.

use super::status::block_service_lines;
use crate::error::{CliError, Result};
use crate::format::block_service_flags;
use eggs_client::ShuckleClient;
use eggs_protocol::shuckle::{flags, BlockServicesReq, SetBlockServiceFlagsReq};
use eggs_protocol::{BlockServiceId, EggsTime};
use std::io::Write;

/// The flags an operator may set or clear (`stale` is shuckle's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flag {
    NoWrite,
    NoRead,
    ReadOnly,
    Decommissioned,
}

impl Flag {
    pub fn bit(self) -> u8 {
        match self {
            Flag::NoWrite => flags::NO_WRITE,
            Flag::NoRead => flags::NO_READ,
            Flag::ReadOnly => flags::READ_ONLY,
            Flag::Decommissioned => flags::DECOMMISSIONED,
        }
    }
}

/// `(flags, mask)` for `SetBlockServiceFlagsReq`: the bits of `set` on, those of `clear` off.
pub fn flags_and_mask(set: &[Flag], clear: &[Flag]) -> Result<(u8, u8)> {
    if let Some(f) = set.iter().find(|f| clear.contains(f)) {
        return Err(CliError::Invalid(format!(
            "{} is both set and cleared",
            block_service_flags(f.bit())
        )));
    }
    let on = set.iter().fold(0, |acc, f| acc | f.bit());
    let off = clear.iter().fold(0, |acc, f| acc | f.bit());
    Ok((on, on | off))
}

/// A block service id as `list` prints it: 16 hex digits (a `0x` prefix is accepted).
pub fn parse_id(s: &str) -> std::result::Result<BlockServiceId, String> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad block service id {s:?} (16 hex digits)"));
    }
    u64::from_str_radix(hex, 16)
        .map(BlockServiceId)
        .map_err(|_| format!("bad block service id {s:?} (16 hex digits)"))
}

pub async fn list(shuckle: &ShuckleClient, out: &mut dyn Write) -> Result<()> {
    let services = shuckle.request(BlockServicesReq {}).await?.services;
    for l in block_service_lines(&services, EggsTime::now()) {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// Sets and clears flags of service `id`, then prints its flags as shuckle has them.
pub async fn flag(
    shuckle: &ShuckleClient,
    id: BlockServiceId,
    set: &[Flag],
    clear: &[Flag],
    out: &mut dyn Write,
) -> Result<()> {
    let (flags, mask) = flags_and_mask(set, clear)?;
    let known = |services: &[eggs_protocol::shuckle::BlockServiceInfo]| {
        services.iter().find(|s| s.id == id).map(|s| s.flags)
    };
    let before = shuckle.request(BlockServicesReq {}).await?.services;
    if known(&before).is_none() {
        return Err(CliError::Invalid(format!(
            "no block service {:016x} (see `eggscli blockservice list`)",
            id.0
        )));
    }
    shuckle
        .request(SetBlockServiceFlagsReq { id, flags, mask })
        .await?;
    let after = shuckle.request(BlockServicesReq {}).await?.services;
    let now = known(&after).unwrap_or(0);
    writeln!(out, "{:016x}  {}", id.0, block_service_flags(now))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(
            flags_and_mask(&[Flag::NoWrite], &[]).unwrap(),
            (flags::NO_WRITE, flags::NO_WRITE)
        );
        assert_eq!(
            flags_and_mask(&[Flag::ReadOnly], &[Flag::NoWrite, Flag::Decommissioned]).unwrap(),
            (
                flags::READ_ONLY,
                flags::READ_ONLY | flags::NO_WRITE | flags::DECOMMISSIONED
            )
        );
        assert_eq!(
            flags_and_mask(&[], &[Flag::NoRead]).unwrap(),
            (0, flags::NO_READ)
        );
        let e = flags_and_mask(&[Flag::NoRead], &[Flag::NoRead]).unwrap_err();
        assert_eq!(e.to_string(), "no-read is both set and cleared");
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("00000000000000ab"), Ok(BlockServiceId(0xab)));
        assert_eq!(parse_id("0xAB"), Ok(BlockServiceId(0xab)));
        assert_eq!(parse_id("ffffffffffffffff"), Ok(BlockServiceId(u64::MAX)));
        assert!(parse_id("").is_err());
        assert!(parse_id("0x").is_err());
        assert!(parse_id("xyz").is_err());
        assert!(parse_id("+1").is_err());
        assert!(parse_id("10000000000000000").is_err());
    }
}
