//! What `chmod` and `chown` are given: modes, octal (`755`) or symbolic (`u+x,go-w`), and
//! owner specs (`alice:staff`, `1234:5678`, `:staff`), read as GNU coreutils reads them.

use crate::accounts::Accounts;
use eggs_protocol::posix::{PERM_BITS, S_ISGID, S_ISUID, S_ISVTX};
use std::fmt;

const S_IRWXU: u32 = 0o700;
const S_IRWXG: u32 = 0o070;
const S_IRWXO: u32 = 0o007;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;

/// A `chmod` mode: a list of changes applied in turn to an inode's permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSpec {
    text: String,
    changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Set,
    Add,
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    /// These bits (of `rwxst`, or an octal mode).
    Bits(u32),
    /// These bits, and execute where the inode is a directory or someone may execute it
    /// (`X`).
    BitsAndX(u32),
    /// The current bits of one class (`u`, `g` or `o` after the operator, e.g. `g=u`),
    /// copied to all three before `who` limits them.
    Copy(u32),
}

/// One operator of a clause (`u+x-w` has two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Change {
    op: Op,
    /// The bits of the classes named before the operator; 0 when none was named, which
    /// means all of them less the umask's.
    who: u32,
    value: Value,
    /// The bits the change names: of a directory, setuid and setgid that are not named
    /// stay as they are (coreutils keeps them so that `chmod 755 dir` does not take away
    /// the group inheritance a setgid directory gives).
    mentioned: u32,
}

impl ModeSpec {
    /// Octal: one to four digits (`644`, `4755`) or more with leading zeros (`00755`, which,
    /// having five digits, also clears a directory's setuid and setgid). Symbolic: clauses
    /// separated by commas, each `[ugoa]*` and one or more `[-+=]` followed by `[rwxXst]*`
    /// or one of `u`, `g`, `o` (`u+x`, `go-w`, `a=rX`, `g=u`, `+t`).
    pub fn parse(s: &str) -> Result<ModeSpec, String> {
        let changes = if s.starts_with(|c: char| c.is_ascii_digit()) {
            vec![parse_octal(s)?]
        } else {
            parse_symbolic(s)?
        };
        Ok(ModeSpec {
            text: s.to_string(),
            changes,
        })
    }

    /// The permission bits ([`PERM_BITS`]) an inode with permission bits `old` gets, where
    /// `umask` limits clauses that name no class.
    pub fn apply(&self, old: u32, is_dir: bool, umask: u32) -> u32 {
        let mut mode = old & PERM_BITS;
        for c in &self.changes {
            let omit = if is_dir {
                (S_ISUID | S_ISGID) & !c.mentioned
            } else {
                0
            };
            let mut value = match c.value {
                Value::Bits(v) => v,
                Value::BitsAndX(v) if is_dir || mode & EXEC != 0 => v | EXEC,
                Value::BitsAndX(v) => v,
                Value::Copy(class) => {
                    let v = mode & class;
                    let spread = |bits| if v & bits != 0 { bits } else { 0 };
                    v | spread(READ) | spread(WRITE) | spread(EXEC)
                }
            };
            let limit = if c.who == 0 { !umask } else { c.who };
            value &= limit & !omit & PERM_BITS;
            match c.op {
                Op::Set => {
                    let kept = if c.who == 0 { 0 } else { !c.who } | omit;
                    mode = (mode & kept) | value;
                }
                Op::Add => mode |= value,
                Op::Remove => mode &= !value,
            }
        }
        mode & PERM_BITS
    }
}

impl fmt::Display for ModeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_octal(s: &str) -> Result<Change, String> {
    if !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "bad mode {s:?}: octal modes have only the digits 0 to 7 (e.g. 755)"
        ));
    }
    let digits = s.trim_start_matches('0');
    let mode = if digits.len() > 4 {
        None
    } else {
        u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8).ok()
    };
    let mode = mode
        .filter(|m| m & !PERM_BITS == 0)
        .ok_or_else(|| format!("bad mode {s:?}: at most 7777"))?;
    // As coreutils: fewer than five digits name a directory's setuid and setgid only when
    // they set them.
    let mentioned = if s.len() < 5 {
        (mode & (S_ISUID | S_ISGID)) | S_ISVTX | 0o777
    } else {
        PERM_BITS
    };
    Ok(Change {
        op: Op::Set,
        who: PERM_BITS,
        value: Value::Bits(mode),
        mentioned,
    })
}

fn parse_symbolic(s: &str) -> Result<Vec<Change>, String> {
    let bad = |why: &str| format!("bad mode {s:?}: {why} (e.g. u+x, go-w, a=rX, or octal 755)");
    let mut changes = Vec::new();
    for clause in s.split(',') {
        let mut chars = clause.chars().peekable();
        let mut who = 0;
        while let Some(&c) = chars.peek() {
            who |= match c {
                'u' => S_ISUID | S_IRWXU,
                'g' => S_ISGID | S_IRWXG,
                'o' => S_ISVTX | S_IRWXO,
                'a' => PERM_BITS,
                '+' | '-' | '=' => break,
                _ => {
                    return Err(bad(&format!(
                        "{c:?} is not one of the classes u, g, o, a or an operator +, -, ="
                    )))
                }
            };
            chars.next();
        }
        if chars.peek().is_none() {
            return Err(bad(if clause.is_empty() {
                "empty clause"
            } else {
                "no operator +, - or ="
            }));
        }
        while let Some(c) = chars.next() {
            let op = match c {
                '=' => Op::Set,
                '+' => Op::Add,
                '-' => Op::Remove,
                _ => return Err(bad(&format!("{c:?} after the permissions"))),
            };
            let copy = match chars.peek() {
                Some('u') => Some(S_IRWXU),
                Some('g') => Some(S_IRWXG),
                Some('o') => Some(S_IRWXO),
                _ => None,
            };
            let value = if let Some(class) = copy {
                chars.next();
                Value::Copy(class)
            } else {
                let mut bits = 0;
                let mut x_if_any = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => bits |= READ,
                        'w' => bits |= WRITE,
                        'x' => bits |= EXEC,
                        'X' => x_if_any = true,
                        's' => bits |= S_ISUID | S_ISGID,
                        't' => bits |= S_ISVTX,
                        '+' | '-' | '=' => break,
                        _ => {
                            return Err(bad(&format!(
                                "{c:?} is not one of the permissions r, w, x, X, s, t"
                            )))
                        }
                    }
                    chars.next();
                }
                if x_if_any {
                    Value::BitsAndX(bits)
                } else {
                    Value::Bits(bits)
                }
            };
            let named = match value {
                Value::Bits(v) | Value::BitsAndX(v) | Value::Copy(v) => v,
            };
            changes.push(Change {
                op,
                who,
                value,
                mentioned: if who == 0 { named } else { who & named },
            });
        }
    }
    Ok(changes)
}

/// A `chown` spec resolved to ids: `OWNER`, `OWNER:GROUP`, `:GROUP`, or `OWNER:` (the
/// owner's login group). Owners and groups are names (from `/etc/passwd` and `/etc/group`)
/// or numeric ids (digits, or `+` and digits for an id even where a name is all digits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerSpec {
    text: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl OwnerSpec {
    pub fn parse(s: &str, accounts: &Accounts) -> Result<OwnerSpec, String> {
        let (owner, group) = match s.split_once(':') {
            Some((o, g)) => (o, Some(g)),
            None => (s, None),
        };
        if group.is_some_and(|g| g.contains(':')) {
            return Err(format!(
                "bad owner {s:?}: expected OWNER, OWNER:GROUP or :GROUP"
            ));
        }
        if owner.is_empty() && group.map_or(true, str::is_empty) {
            return Err(format!(
                "bad owner {s:?}: give an owner, a group or both (OWNER, OWNER:GROUP or :GROUP)"
            ));
        }
        let (uid, login_group) = match owner {
            "" => (None, None),
            o => {
                let uid = resolve(o, "user", |n| accounts.user(n).map(|(uid, _)| uid))?;
                // A name's own line, else the first line of its uid (a numeric owner).
                let login = match accounts.user(o) {
                    Some((u, gid)) if u == uid => Some(gid),
                    _ => accounts.login_group(uid),
                };
                (Some(uid), login)
            }
        };
        let gid = match group {
            None => None,
            Some("") => Some(login_group.ok_or_else(|| {
                format!(
                    "bad owner {s:?}: user {owner} has no login group in {} (give OWNER:GROUP)",
                    Accounts::PASSWD
                )
            })?),
            Some(g) => Some(resolve(g, "group", |n| accounts.group(n))?),
        };
        Ok(OwnerSpec {
            text: s.to_string(),
            uid,
            gid,
        })
    }
}

impl fmt::Display for OwnerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A user or group id: a name to look up, else digits; `+` and digits is an id even where
/// a name is all digits (as coreutils reads them).
fn resolve(s: &str, what: &str, lookup: impl Fn(&str) -> Option<u32>) -> Result<u32, String> {
    let digits = match s.strip_prefix('+') {
        Some(d) => d,
        None => {
            if let Some(id) = lookup(s) {
                return Ok(id);
            }
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                let file = if what == "user" {
                    Accounts::PASSWD
                } else {
                    Accounts::GROUP
                };
                return Err(format!("unknown {what} {s:?} (not in {file})"));
            }
            s
        }
    };
    match digits.parse::<u32>() {
        // (uid_t)-1 means "leave unchanged" to chown(2): no inode can be given it.
        Ok(id) if id != u32::MAX && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(format!("bad {what} id {s:?}: at most {}", u32::MAX - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::tests::sample;

    fn apply(spec: &str, old: u32, is_dir: bool, umask: u32) -> u32 {
        ModeSpec::parse(spec).unwrap().apply(old, is_dir, umask)
    }

    /// Applies to a file, with umask 022.
    fn file(spec: &str, old: u32) -> u32 {
        apply(spec, old, false, 0o022)
    }

    #[test]
    fn octal_modes() {
        assert_eq!(file("640", 0o777), 0o640);
        assert_eq!(file("755", 0), 0o755);
        assert_eq!(file("4755", 0o644), 0o4755);
        assert_eq!(file("0", 0o7777), 0);
        assert_eq!(file("7777", 0), 0o7777);
        assert_eq!(file("00755", 0o4755), 0o755);
        assert_eq!(file("0000644", 0o777), 0o644);
        assert_eq!(ModeSpec::parse("640").unwrap().to_string(), "640");
        // A directory keeps setuid and setgid that fewer than five digits do not set.
        assert_eq!(apply("755", 0o2775, true, 0o022), 0o2755);
        assert_eq!(apply("2755", 0o775, true, 0o022), 0o2755);
        assert_eq!(apply("00755", 0o6775, true, 0o022), 0o755);
        assert_eq!(
            apply("755", 0o1777, true, 0o022),
            0o755,
            "sticky is not kept"
        );
    }

    #[test]
    fn bad_octal_modes() {
        for s in [
            "8",
            "0o755",
            "75a",
            "17777",
            "77777",
            "99999999999999999999999",
            "-1",
        ] {
            let e = ModeSpec::parse(s).unwrap_err();
            assert!(e.starts_with(&format!("bad mode {s:?}")), "{s}: {e}");
        }
        assert_eq!(
            ModeSpec::parse("17777").unwrap_err(),
            "bad mode \"17777\": at most 7777"
        );
    }

    #[test]
    fn symbolic_modes() {
        assert_eq!(file("u+x", 0o644), 0o744);
        assert_eq!(file("go-w", 0o666), 0o644);
        assert_eq!(file("a=r", 0o777), 0o444);
        assert_eq!(file("ugo=rw", 0o4777), 0o666);
        assert_eq!(file("u=rwx,g=rx,o=", 0), 0o750);
        assert_eq!(file("o=", 0o777), 0o770);
        assert_eq!(file("u+s", 0o755), 0o4755);
        assert_eq!(file("g+s", 0o755), 0o2755);
        assert_eq!(file("+t", 0o777), 0o1777);
        assert_eq!(file("o+t", 0o777), 0o1777);
        assert_eq!(file("u+t", 0o777), 0o777, "t is others'");
        assert_eq!(file("a-s", 0o6755), 0o755);
        assert_eq!(file("u+x-w", 0o644), 0o544);
        assert_eq!(file("u=rw+x", 0), 0o700);
        assert_eq!(file("g=u", 0o640), 0o660);
        assert_eq!(file("o=g", 0o751), 0o755);
        assert_eq!(file("go=u-w", 0o700), 0o755);
        assert_eq!(file("u+", 0o644), 0o644);
        assert_eq!(file("=", 0o4777), 0);
        assert_eq!(file("a=rx", 0o4777), 0o555);
    }

    #[test]
    fn capital_x_adds_execute_to_directories_and_executables() {
        assert_eq!(file("a+X", 0o644), 0o644);
        assert_eq!(file("a+X", 0o744), 0o755);
        assert_eq!(apply("a+X", 0o644, true, 0), 0o755);
        assert_eq!(file("u=rwX,go=rX", 0o700), 0o755);
        assert_eq!(file("u=rwX,go=rX", 0o600), 0o644);
    }

    #[test]
    fn clauses_without_classes_respect_the_umask() {
        assert_eq!(apply("+w", 0o444, false, 0o022), 0o644);
        assert_eq!(apply("+w", 0o444, false, 0), 0o666);
        // As GNU chmod (which then warns "new permissions are r--rw-rw-, not r--r--r--").
        assert_eq!(apply("-w", 0o666, false, 0o022), 0o466);
        assert_eq!(apply("=rw", 0o777, false, 0o022), 0o644);
        assert_eq!(apply("=rw", 0o777, false, 0o077), 0o600);
        assert_eq!(
            apply("a+w", 0o444, false, 0o022),
            0o666,
            "a ignores the umask"
        );
    }

    #[test]
    fn directories_keep_setgid_unless_a_clause_names_it() {
        assert_eq!(apply("u=rwx,go=rx", 0o2775, true, 0o022), 0o2755);
        assert_eq!(apply("g=rx", 0o2775, true, 0o022), 0o2755);
        assert_eq!(apply("g-s", 0o2775, true, 0o022), 0o775);
        assert_eq!(apply("=rx", 0o2775, true, 0o022), 0o2555);
        assert_eq!(apply("a=rx", 0o6775, true, 0o022), 0o6555);
        assert_eq!(apply("a-s", 0o6775, true, 0o022), 0o775);
        assert_eq!(apply("a=rx", 0o6775, false, 0o022), 0o555, "not for files");
    }

    #[test]
    fn bad_symbolic_modes() {
        for s in [
            "", "u", "ugo", "u+q", "x+u", "u+x,", ",u+x", "u+x,,g+w", "u+rw x", "u=gu", "+ug",
            "u+x:",
        ] {
            let e = ModeSpec::parse(s).unwrap_err();
            assert!(e.starts_with(&format!("bad mode {s:?}")), "{s}: {e}");
        }
        assert_eq!(
            ModeSpec::parse("u+q").unwrap_err(),
            "bad mode \"u+q\": 'q' is not one of the permissions r, w, x, X, s, t \
             (e.g. u+x, go-w, a=rX, or octal 755)"
        );
        assert!(ModeSpec::parse("u").unwrap_err().contains("no operator"));
    }

    fn owner(s: &str) -> Result<(Option<u32>, Option<u32>), String> {
        OwnerSpec::parse(s, &sample()).map(|o| (o.uid, o.gid))
    }

    #[test]
    fn owner_specs() {
        assert_eq!(owner("1234"), Ok((Some(1234), None)));
        assert_eq!(owner("1234:5678"), Ok((Some(1234), Some(5678))));
        assert_eq!(owner(":5678"), Ok((None, Some(5678))));
        assert_eq!(owner("0:0"), Ok((Some(0), Some(0))));
        assert_eq!(owner("alice"), Ok((Some(1000), None)));
        assert_eq!(owner("alice:staff"), Ok((Some(1000), Some(50))));
        assert_eq!(owner("bob:100"), Ok((Some(1001), Some(100))));
        assert_eq!(owner(":users"), Ok((None, Some(100))));
        assert_eq!(owner("alice:"), Ok((Some(1000), Some(100))), "login group");
        assert_eq!(owner("1001:"), Ok((Some(1001), Some(1001))));
        assert_eq!(
            owner("alias:"),
            Ok((Some(1000), Some(1000))),
            "its own line"
        );
        assert_eq!(
            owner("1000:"),
            Ok((Some(1000), Some(100))),
            "the uid's first line"
        );
        assert_eq!(owner("+1000"), Ok((Some(1000), None)));
        assert_eq!(owner("4294967294"), Ok((Some(4_294_967_294), None)));
        assert_eq!(
            OwnerSpec::parse("1:2", &Accounts::none())
                .unwrap()
                .to_string(),
            "1:2"
        );
    }

    #[test]
    fn bad_owner_specs() {
        assert_eq!(
            owner("nobody9"),
            Err("unknown user \"nobody9\" (not in /etc/passwd)".into())
        );
        assert_eq!(
            owner(":wheel"),
            Err("unknown group \"wheel\" (not in /etc/group)".into())
        );
        assert_eq!(
            owner("4294967295"),
            Err("bad user id \"4294967295\": at most 4294967294".into())
        );
        assert!(owner("99999999999").unwrap_err().starts_with("bad user id"));
        assert!(owner(":-1").unwrap_err().starts_with("unknown group"));
        assert!(owner("1234:").unwrap_err().contains("has no login group"));
        for s in ["", ":", "a:b:c", "1:2:3", "+", "+x", "1 2", " "] {
            assert!(owner(s).is_err(), "{s:?}");
        }
        assert!(owner("")
            .unwrap_err()
            .contains("give an owner, a group or both"));
    }
}
