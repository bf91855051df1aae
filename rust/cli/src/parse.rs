//! Parsing what people type: sizes (`64K`), durations (`30d`), policy ladders, addresses.

use eggs_protocol::policy::{
    BlockPolicy, BlockPolicyEntry, Parity, SpanPolicy, SpanPolicyEntry, StorageClass,
};
use std::net::{SocketAddr, ToSocketAddrs};

/// A byte count: a number with an optional binary suffix, `K`, `M`, `G` or `T` (also `KB`,
/// `KiB`, ...; always powers of 1024, case-insensitive). Fractions are allowed when the result
/// is a whole number of bytes: `1.5K` is 1536.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "bad size {s:?}: unknown suffix {suffix:?} (use K, M, G or T)"
            ))
        }
    };
    let bytes = scale(num, 1u64 << shift).ok_or_else(|| format!("bad size {s:?}"))?;
    Ok(bytes)
}

/// `num * unit`, exactly; `num` may have a fractional part.
fn scale(num: &str, unit: u64) -> Option<u64> {
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole.checked_mul(unit)?;
    if !frac.is_empty() {
        let digits: u32 = frac.len().try_into().ok()?;
        let denom = 10u64.checked_pow(digits)?;
        let frac: u64 = frac.parse().ok()?;
        let scaled = (frac as u128) * (unit as u128);
        if scaled % denom as u128 != 0 {
            return None;
        }
        total = total.checked_add(u64::try_from(scaled / denom as u128).ok()?)?;
    }
    Some(total)
}

/// A size that must fit in 32 bits (span and block sizes).
pub fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n).map_err(|_| format!("{s} is too large (at most 4G - 1)"))
}

const NS_PER_UNIT: &[(&str, u64)] = &[
    ("w", 7 * 86_400_000_000_000),
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// A duration in nanoseconds: numbers with units `w`, `d`, `h`, `m`, `s`, `ms`, possibly
/// several (`1d12h`). `0` alone means zero.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (num, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?}: expected a number before {unit:?}"))?;
        let per = NS_PER_UNIT
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, ns)| *ns)
            .ok_or_else(|| format!("bad duration {s:?}: unit must be w, d, h, m, s or ms"))?;
        total = n
            .checked_mul(per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// `D+P`, e.g. `10+4` (10 data blocks, 4 parity blocks) or `1+2` (three copies).
pub fn parse_parity(s: &str) -> Result<Parity, String> {
    let (d, p) = s
        .split_once('+')
        .ok_or_else(|| format!("bad parity {s:?}: expected D+P, e.g. 10+4"))?;
    let data: u8 = d.trim().parse().map_err(|_| format!("bad parity {s:?}"))?;
    let parity: u8 = p.trim().parse().map_err(|_| format!("bad parity {s:?}"))?;
    let parity = Parity { data, parity };
    if !parity.is_valid() {
        return Err(format!(
            "bad parity {s:?}: data blocks must be 1..={}, parity blocks 0..={}",
            Parity::MAX_DATA,
            Parity::MAX_PARITY
        ));
    }
    Ok(parity)
}

/// `SIZE:D+P,SIZE:D+P,...`: spans up to SIZE bytes use D data and P parity blocks.
pub fn parse_span_policy(s: &str) -> Result<SpanPolicy, String> {
    let entries = s
        .split(',')
        .map(|item| {
            let (size, parity) = item
                .split_once(':')
                .ok_or_else(|| format!("bad span entry {item:?}: expected SIZE:D+P"))?;
            Ok(SpanPolicyEntry {
                max_span_size: parse_size_u32(size)?,
                parity: parse_parity(parity)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if entries
        .windows(2)
        .any(|w| w[0].max_span_size >= w[1].max_span_size)
    {
        return Err("span sizes must increase from one entry to the next".into());
    }
    Ok(SpanPolicy { entries })
}

pub fn parse_storage_class(s: &str) -> Result<StorageClass, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "flash" => Ok(StorageClass::Flash),
        "hdd" => Ok(StorageClass::Hdd),
        _ => Err(format!("bad storage class {s:?}: expected flash or hdd")),
    }
}

/// `MINSIZE:CLASS,...`: blocks of at least MINSIZE bytes go to CLASS (`flash` or `hdd`).
pub fn parse_block_policy(s: &str) -> Result<BlockPolicy, String> {
    let entries = s
        .split(',')
        .map(|item| {
            let (size, class) = item
                .split_once(':')
                .ok_or_else(|| format!("bad block entry {item:?}: expected MINSIZE:flash|hdd"))?;
            Ok(BlockPolicyEntry {
                min_size: parse_size_u32(size)?,
                storage_class: parse_storage_class(class)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if entries.windows(2).any(|w| w[0].min_size >= w[1].min_size) {
        return Err("block sizes must increase from one entry to the next".into());
    }
    Ok(BlockPolicy { entries })
}

/// `HOST:PORT`, resolved to an IPv4 address (the protocol carries IPv4 only).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e} (expected HOST:PORT)"))?;
    let mut addrs: Vec<SocketAddr> = addrs.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{s:?} has no IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size(" 2M "), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("1.1").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.2.3K").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000T").is_err());
        assert_eq!(
            parse_size_u32("4G"),
            Err("4G is too large (at most 4G - 1)".into())
        );
        assert_eq!(parse_size_u32("100M"), Ok(100 << 20));
    }

    #[test]
    fn durations() {
        const S: u64 = 1_000_000_000;
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("90s"), Ok(90 * S));
        assert_eq!(parse_duration("15m"), Ok(900 * S));
        assert_eq!(parse_duration("12h"), Ok(12 * 3600 * S));
        assert_eq!(parse_duration("30d"), Ok(30 * 86400 * S));
        assert_eq!(parse_duration("2w"), Ok(14 * 86400 * S));
        assert_eq!(parse_duration("1d12h"), Ok(36 * 3600 * S));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("-1d").is_err());
        assert!(parse_duration("99999999999w").is_err());
    }

    #[test]
    fn span_policies() {
        let p = parse_span_policy("64K:1+2,10M:4+4,100M:10+4").unwrap();
        assert_eq!(p.entries.len(), 3);
        assert_eq!(p.entries[0].max_span_size, 64 << 10);
        assert_eq!(p.entries[0].parity, Parity { data: 1, parity: 2 });
        assert_eq!(
            p.entries[2].parity,
            Parity {
                data: 10,
                parity: 4
            }
        );
        assert!(parse_span_policy("64K").is_err());
        assert!(parse_span_policy("64K:3").is_err());
        assert!(parse_span_policy("64K:0+2").is_err());
        assert!(parse_span_policy("64K:17+2").is_err());
        assert!(parse_span_policy("10M:4+4,64K:1+2").is_err());
        assert!(parse_span_policy("").is_err());
    }

    #[test]
    fn block_policies() {
        let p = parse_block_policy("0:flash,2M:HDD").unwrap();
        assert_eq!(p.entries[0].storage_class, StorageClass::Flash);
        assert_eq!(p.entries[1].min_size, 2 << 20);
        assert_eq!(p.entries[1].storage_class, StorageClass::Hdd);
        assert!(parse_block_policy("0:tape").is_err());
        assert!(parse_block_policy("2M:hdd,0:flash").is_err());
        assert!(parse_block_policy("flash").is_err());
    }

    #[test]
    fn addrs() {
        assert_eq!(
            parse_addr("127.0.0.1:10001"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 10001)))
        );
        assert!(parse_addr("localhost:10001").unwrap().is_ipv4());
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(parse_addr("[::1]:10001").is_err());
    }
}
