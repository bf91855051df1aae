//! Users and groups by name and by id, from `/etc/passwd` and `/etc/group` of the machine
//! `eggscli` runs on: for showing owners and groups by name, and for `chown alice:staff`.
//!
//! Only those two files are read (no NSS: users known only to LDAP or similar show as
//! numbers, and their names cannot be given to `chown`). Ids are what EggsFS stores; names
//! are this machine's view of them.

use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Accounts {
    /// Name to (uid, login gid).
    users: HashMap<String, (u32, u32)>,
    user_names: HashMap<u32, String>,
    groups: HashMap<String, u32>,
    group_names: HashMap<u32, String>,
}

impl Accounts {
    pub const PASSWD: &'static str = "/etc/passwd";
    pub const GROUP: &'static str = "/etc/group";

    /// No users or groups: every id shows as a number.
    pub fn none() -> Accounts {
        Accounts::default()
    }

    /// This machine's users and groups; a file that cannot be read counts as empty.
    pub fn load() -> Accounts {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Accounts::parse(&read(Self::PASSWD), &read(Self::GROUP))
    }

    /// Users from `passwd` lines (`name:password:uid:gid:...`) and groups from `group` lines
    /// (`name:password:gid:members`). Malformed lines and comments are skipped; when several
    /// lines have one name or id, the first counts (as for `getpwnam` and `getpwuid`).
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let mut a = Accounts::default();
        for fields in records(passwd) {
            let (Some(name), Some(uid), Some(gid)) = (
                fields.first(),
                fields.get(2).and_then(|f| f.parse().ok()),
                fields.get(3).and_then(|f| f.parse().ok()),
            ) else {
                continue;
            };
            a.users.entry(name.to_string()).or_insert((uid, gid));
            a.user_names.entry(uid).or_insert_with(|| name.to_string());
        }
        for fields in records(group) {
            let (Some(name), Some(gid)) =
                (fields.first(), fields.get(2).and_then(|f| f.parse().ok()))
            else {
                continue;
            };
            a.groups.entry(name.to_string()).or_insert(gid);
            a.group_names.entry(gid).or_insert_with(|| name.to_string());
        }
        a
    }

    /// The uid and login group of a user name.
    pub fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.get(name).copied()
    }

    /// The login group of a uid.
    pub fn login_group(&self, uid: u32) -> Option<u32> {
        let name = self.user_names.get(&uid)?;
        self.user(name).map(|(_, gid)| gid)
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }

    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.user_names.get(&uid).map(String::as_str)
    }

    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.group_names.get(&gid).map(String::as_str)
    }

    /// The user's name, or its uid when it has none here (as `ls -l` shows owners).
    pub fn show_user(&self, uid: u32) -> String {
        self.user_name(uid)
            .map_or_else(|| uid.to_string(), str::to_string)
    }

    pub fn show_group(&self, gid: u32) -> String {
        self.group_name(gid)
            .map_or_else(|| gid.to_string(), str::to_string)
    }
}

/// The `:`-separated fields of each line that is not empty or a comment.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.first().is_some_and(|n| !n.is_empty()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Accounts {
        Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\n\
             # a comment\n\
             \n\
             alice:x:1000:100:Alice:/home/alice:/bin/sh\n\
             broken:x:notanumber:1\n\
             short:x\n\
             alias:x:1000:1000::/:/bin/false\n\
             bob:x:1001:1001::/home/bob:/bin/sh\n",
            "root:x:0:\nusers:x:100:alice,bob\nbob:x:1001:\nstaff:x:50:alice\nbad:x:\n",
        )
    }

    #[test]
    fn names_and_ids_both_ways() {
        let a = sample();
        assert_eq!(a.user("alice"), Some((1000, 100)));
        assert_eq!(a.user("alias"), Some((1000, 1000)));
        assert_eq!(a.user_name(1000), Some("alice"), "the first line wins");
        assert_eq!(a.user("broken"), None);
        assert_eq!(a.user("short"), None);
        assert_eq!(a.login_group(1000), Some(100));
        assert_eq!(a.login_group(1001), Some(1001));
        assert_eq!(a.login_group(7), None);
        assert_eq!(a.group("staff"), Some(50));
        assert_eq!(a.group("bad"), None);
        assert_eq!(a.group_name(100), Some("users"));
        assert_eq!(a.show_user(0), "root");
        assert_eq!(a.show_user(1234), "1234");
        assert_eq!(a.show_group(50), "staff");
        assert_eq!(a.show_group(5678), "5678");
        let none = Accounts::none();
        assert_eq!(none.show_user(0), "0");
        assert_eq!(none.show_group(0), "0");
    }

    #[test]
    fn this_machine_loads() {
        // Whatever the files say, loading neither fails nor panics.
        let a = Accounts::load();
        let _ = a.show_user(0);
    }
}
