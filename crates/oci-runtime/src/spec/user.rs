//! Resolving the container user against the image's /etc/passwd and
//! /etc/group (whose contents the caller passes in).

use super::SpecError;
use crius_cri_api::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn lines(content: &str) -> impl Iterator<Item = &str> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Parses /etc/passwd (`name:x:uid:gid:gecos:home:shell`); malformed lines
/// are skipped.
pub fn parse_passwd(content: &str) -> Vec<PasswdEntry> {
    lines(content)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Parses /etc/group (`name:x:gid:member,member`); malformed lines are
/// skipped.
pub fn parse_group(content: &str) -> Vec<GroupEntry> {
    lines(content)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The resolved process user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: deduplicated, without the primary gid.
    pub additional_gids: Vec<u32>,
    /// The user name when /etc/passwd knows the uid.
    pub name: Option<String>,
    /// The home directory from /etc/passwd.
    pub home: Option<String>,
}

fn parse_id(field: &str, s: &str) -> Result<u32, SpecError> {
    s.parse::<u32>()
        .map_err(|_| SpecError::invalid(field, format!("{s:?} is not a valid id")))
}

/// The kernel's limit on supplementary groups (setgroups fails past it).
const NGROUPS_MAX: usize = 65536;

fn id_from_i64(field: &str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| SpecError::invalid(field, format!("{v} is out of range")))
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves the user: `run_as_user`, else `run_as_username`, else the image
/// `User` ("uid", "name", "uid:gid", "name:group", ...; empty = root);
/// `run_as_group` overrides the group. Supplementary groups follow
/// `supplemental_groups_policy`: Merge (default) = the /etc/group entries
/// listing the user name plus the CRI `supplemental_groups`; Strict = only
/// the CRI ones.
pub fn resolve_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, SpecError> {
    const SC: &str = "linux.security_context";
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let by_uid = |uid: u32| users.iter().find(|u| u.uid == uid);
    let by_name = |field: &str, name: &str| {
        users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| SpecError::UserNotFound {
                field: field.to_string(),
                name: name.to_string(),
            })
    };

    // The user part and an explicit group (if any).
    let (entry, uid, mut gid): (Option<&PasswdEntry>, u32, Option<u32>) =
        match sc.and_then(|s| s.run_as_user.as_ref()) {
            Some(v) => {
                let uid = id_from_i64(&format!("{SC}.run_as_user"), v.value)?;
                (by_uid(uid), uid, None)
            }
            None if sc.is_some_and(|s| !s.run_as_username.is_empty()) => {
                let field = format!("{SC}.run_as_username");
                let name = sc.map(|s| s.run_as_username.as_str()).unwrap_or_default();
                let e = by_name(&field, name)?;
                (Some(e), e.uid, None)
            }
            None => {
                const F: &str = "image.config.User";
                let (u, g) = match image_user.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (image_user, None),
                };
                let (entry, uid) = if u.is_empty() {
                    (by_uid(0), 0)
                } else if is_numeric(u) {
                    let uid = parse_id(F, u)?;
                    (by_uid(uid), uid)
                } else {
                    let e = by_name(F, u)?;
                    (Some(e), e.uid)
                };
                let gid = match g {
                    None | Some("") => None,
                    Some(g) if is_numeric(g) => Some(parse_id(F, g)?),
                    Some(g) => Some(
                        groups
                            .iter()
                            .find(|e| e.name == g)
                            .ok_or_else(|| SpecError::GroupNotFound {
                                field: F.to_string(),
                                name: g.to_string(),
                            })?
                            .gid,
                    ),
                };
                (entry, uid, gid)
            }
        };
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        // kubelet only sends a group with a user (runAsGroup needs runAsUser
        // in the pod API); a group alone would silently pair with the
        // image's user, which the pod author did not choose.
        if sc.is_some_and(|s| s.run_as_user.is_none() && s.run_as_username.is_empty()) {
            return Err(SpecError::invalid(
                format!("{SC}.run_as_group"),
                "is set without run_as_user or run_as_username".to_string(),
            ));
        }
        gid = Some(id_from_i64(&format!("{SC}.run_as_group"), g.value)?);
    }
    let gid = gid.or(entry.map(|e| e.gid)).unwrap_or(0);

    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy() == SupplementalGroupsPolicy::Strict);
    // The primary group leads the list, as the process really has it
    // (containerd and CRI-O put it there too; `id -G` shows it). A set keeps
    // the merge linear however large a hostile /etc/group is.
    let mut additional: Vec<u32> = vec![gid];
    let mut seen: std::collections::HashSet<u32> = std::collections::HashSet::from([gid]);
    let mut push = |g: u32| -> Result<(), SpecError> {
        if seen.insert(g) {
            if additional.len() >= NGROUPS_MAX {
                return Err(SpecError::invalid(
                    format!("{SC}.supplemental_groups"),
                    format!("the user would be in more than {NGROUPS_MAX} groups"),
                ));
            }
            additional.push(g);
        }
        Ok(())
    };
    if !strict {
        if let Some(e) = entry {
            for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
                push(g.gid)?;
            }
        }
    }
    for (i, g) in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        push(id_from_i64(&format!("{SC}.supplemental_groups[{i}]"), *g)?)?;
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        name: entry.map(|e| e.name.clone()),
        home: entry.map(|e| e.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_cri_api::v1::Int64Value;

    const PASSWD: &str = "\
# comment
root:x:0:0:root:/root:/bin/sh

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
video:x:44:app
app:x:1000:app
staff:x:50:
";

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    #[test]
    fn parsing_skips_comments_blank_and_malformed_lines() {
        let u = parse_passwd(PASSWD);
        assert_eq!(u.len(), 3);
        assert_eq!(u[2].home, "/home/app");
        let g = parse_group(GROUP);
        assert_eq!(g[2].members, vec!["root", "app"]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn image_user_forms() {
        // (image user, uid, gid, additional gids)
        let cases: &[(&str, u32, u32, &[u32])] = &[
            ("", 0, 0, &[0, 10]),
            ("0", 0, 0, &[0, 10]),
            ("app", 1000, 1000, &[1000, 10, 44]),
            ("1000", 1000, 1000, &[1000, 10, 44]),
            ("1000:50", 1000, 50, &[50, 10, 44, 1000]),
            ("app:staff", 1000, 50, &[50, 10, 44, 1000]),
            ("1000:staff", 1000, 50, &[50, 10, 44, 1000]),
            ("app:44", 1000, 44, &[44, 10, 1000]),
            ("4242", 4242, 0, &[0]),
            ("4242:7", 4242, 7, &[7]),
        ];
        for (user, uid, gid, add) in cases {
            let got = resolve_user(None, user, PASSWD, GROUP).unwrap();
            assert_eq!(
                (got.uid, got.gid, got.additional_gids.as_slice()),
                (*uid, *gid, *add),
                "image user {user:?}"
            );
        }
    }

    #[test]
    fn image_user_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "nobodyx",
                "image.config.User: user \"nobodyx\" not found in the image's /etc/passwd",
            ),
            (
                "app:nogroup",
                "image.config.User: group \"nogroup\" not found in the image's /etc/group",
            ),
            ("99999999999", "image.config.User:"),
        ];
        for (user, want) in cases {
            let err = resolve_user(None, user, PASSWD, GROUP).unwrap_err();
            assert!(err.to_string().starts_with(want), "{user}: {err}");
        }
        // No /etc/passwd at all: names cannot resolve, numbers can.
        assert!(resolve_user(None, "app", "", "").is_err());
        assert_eq!(resolve_user(None, "5", "", "").unwrap().uid, 5);
    }

    #[test]
    fn security_context_fields() {
        let mut by_uid = sc();
        by_uid.run_as_user = Some(Int64Value { value: 1000 });
        let mut by_name = sc();
        by_name.run_as_username = "app".into();
        let mut with_group = sc();
        with_group.run_as_user = Some(Int64Value { value: 1 });
        with_group.run_as_group = Some(Int64Value { value: 44 });
        let mut unknown_uid = sc();
        unknown_uid.run_as_user = Some(Int64Value { value: 7777 });
        // (context, image user, uid, gid, additional)
        let cases: Vec<(&LinuxContainerSecurityContext, &str, u32, u32, &[u32])> = vec![
            (&by_uid, "daemon", 1000, 1000, &[1000, 10, 44]),
            (&by_name, "", 1000, 1000, &[1000, 10, 44]),
            (&with_group, "app:staff", 1, 44, &[44]),
            (&unknown_uid, "app", 7777, 0, &[0]),
        ];
        for (i, (s, image_user, uid, gid, add)) in cases.into_iter().enumerate() {
            let got = resolve_user(Some(s), image_user, PASSWD, GROUP).unwrap();
            assert_eq!(
                (got.uid, got.gid, got.additional_gids.as_slice()),
                (uid, gid, add),
                "case {i}"
            );
        }
    }

    #[test]
    fn security_context_errors_name_the_field() {
        let mut s = sc();
        s.run_as_username = "nobodyx".into();
        let err = resolve_user(Some(&s), "", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.security_context.run_as_username: user \"nobodyx\" not found in the image's /etc/passwd"
        );
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: -1 });
        let err = resolve_user(Some(&s), "", PASSWD, GROUP).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("linux.security_context.run_as_user:"));
        let mut s = sc();
        s.supplemental_groups = vec![1, -5];
        let err = resolve_user(Some(&s), "", PASSWD, GROUP).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("linux.security_context.supplemental_groups[1]:"));
    }

    #[test]
    fn a_group_without_a_user_is_refused() {
        let mut s = sc();
        s.run_as_group = Some(Int64Value { value: 44 });
        let err = resolve_user(Some(&s), "app", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.security_context.run_as_group: is set without run_as_user or run_as_username"
        );
        s.run_as_username = "app".into();
        assert_eq!(resolve_user(Some(&s), "", PASSWD, GROUP).unwrap().gid, 44);
    }

    #[test]
    fn a_hostile_group_file_is_merged_linearly_and_capped() {
        // 70 000 groups all naming the user: past NGROUPS_MAX, refused (and
        // quickly: a quadratic merge would take minutes here).
        let mut group = String::new();
        for g in 0..70_000u32 {
            group.push_str(&format!("g{g}:x:{}:app\n", g + 2000));
        }
        let t = std::time::Instant::now();
        let err = resolve_user(None, "app", PASSWD, &group).unwrap_err();
        assert!(err.to_string().contains("more than 65536 groups"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // The same user in 60 000 groups fits.
        group.clear();
        for g in 0..60_000u32 {
            group.push_str(&format!("g{g}:x:{}:app\n", g + 2000));
        }
        let got = resolve_user(None, "app", PASSWD, &group).unwrap();
        assert_eq!(got.additional_gids.len(), 60_001);
    }

    #[test]
    fn supplemental_group_policies() {
        // (policy, CRI supplemental groups, additional)
        let cases: &[(SupplementalGroupsPolicy, &[i64], &[u32])] = &[
            (SupplementalGroupsPolicy::Merge, &[], &[1000, 10, 44]),
            (
                SupplementalGroupsPolicy::Merge,
                &[44, 2000, 2000, 1000],
                &[1000, 10, 44, 2000],
            ),
            (SupplementalGroupsPolicy::Strict, &[], &[1000]),
            (
                SupplementalGroupsPolicy::Strict,
                &[2000, 1000, 2000, 3],
                &[1000, 2000, 3],
            ),
        ];
        for (policy, groups, want) in cases {
            let mut s = sc();
            s.run_as_username = "app".into();
            s.set_supplemental_groups_policy(*policy);
            s.supplemental_groups = groups.to_vec();
            let got = resolve_user(Some(&s), "", PASSWD, GROUP).unwrap();
            assert_eq!(got.gid, 1000);
            assert_eq!(got.additional_gids, *want, "{policy:?} {groups:?}");
        }
    }
}
