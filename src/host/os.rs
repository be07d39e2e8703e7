//! OS facts (distro, codename, release) as systeminformation's `osInfo()` gives them on Linux,
//! because Butler reports exactly those and dashboards group by them.
//!
//! systeminformation runs `cat /etc/*-release; cat /usr/lib/os-release; cat /etc/openwrt_release`
//! and folds every `KEY=VALUE` line into one map, later files overwriting earlier ones. Then:
//! distro = `DISTRIB_ID` or `NAME`; release = `PRETTY_NAME` minus the distro name (else `VERSION`),
//! cut before any `(`, else `DISTRIB_RELEASE`, else `VERSION_ID`; codename = what was in the
//! parentheses, else `DISTRIB_CODENAME`, else `VERSION_CODENAME`. So Ubuntu gives `Ubuntu`,
//! `22.04.4 LTS`, `jammy`; Debian gives `Debian GNU/Linux`, `12`, `bookworm`.
//!
//! The files are read below the etc root (the host's when `HOST_ETC`/`HOST_ROOT` is set);
//! `/usr/lib/os-release` and absolute symlinks (`/etc/os-release -> /usr/lib/os-release`) are
//! resolved below the etc root's parent, never in the agent's own view, so a container never
//! reports its image's distro as the host's. With no file at all (a `FROM scratch` image without
//! a host mount) every fact is `unknown`: nothing is guessed.

use std::path::{Path, PathBuf};

use super::{Roots, UNKNOWN, read_text};

/// The three facts and the rule behind each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsInfo {
    pub(crate) distro: String,
    pub(crate) codename: String,
    pub(crate) release: String,
    pub(crate) distro_rule: String,
    pub(crate) codename_rule: String,
    pub(crate) release_rule: String,
}

/// One `KEY=VALUE` entry and the file that set it last.
#[derive(Debug, Clone)]
struct Entry {
    value: String,
    file: String,
}

/// Reads the release files below the etc root and derives the facts.
pub(crate) fn detect(roots: &Roots) -> OsInfo {
    let files = release_files(&roots.etc);
    let origin = &roots.etc_origin;
    let mut info = derive(&files);
    if origin.is_host_mount() {
        for r in [
            &mut info.distro_rule,
            &mut info.codename_rule,
            &mut info.release_rule,
        ] {
            r.push_str(&format!(" (host files via {origin})"));
        }
    }
    info
}

/// The files systeminformation reads, in its order, as `(name, content)`; names are the paths
/// as the host sees them (`/etc/os-release`), for the rules.
fn release_files(etc: &Path) -> Vec<(String, String)> {
    let base = etc.parent().unwrap_or(etc).to_path_buf();
    let mut names: Vec<String> = match std::fs::read_dir(etc) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with("-release") && !n.starts_with('.'))
            .collect(),
        Err(e) => {
            tracing::debug!(path = %etc.display(), error = %e, "etc root not readable");
            Vec::new()
        }
    };
    // The shell sorts glob matches; these names are ASCII, so byte order is the same.
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(text) = read_resolved(&base, &etc.join(&n)) {
            out.push((format!("/etc/{n}"), text));
        }
    }
    for (shown, rel) in [
        ("/usr/lib/os-release", "usr/lib/os-release"),
        ("/etc/openwrt_release", "etc/openwrt_release"),
    ] {
        let path = if rel.starts_with("etc/") {
            etc.join("openwrt_release")
        } else {
            base.join(rel)
        };
        if let Some(text) = read_resolved(&base, &path) {
            out.push((shown.to_string(), text));
        }
    }
    out
}

/// Reads `path`, following symlinks as if `base` were `/` (at most 8 hops).
fn read_resolved(base: &Path, path: &Path) -> Option<String> {
    let mut p: PathBuf = path.to_path_buf();
    for _ in 0..8 {
        match std::fs::read_link(&p) {
            Ok(target) => {
                p = if target.is_absolute() {
                    super::below(base, &target)
                } else {
                    p.parent().unwrap_or(base).join(target)
                };
            }
            Err(_) => return read_text(&p),
        }
    }
    tracing::debug!(path = %path.display(), "symlink chain too long");
    None
}

/// Pure derivation from `(file, content)` pairs, in reading order.
pub fn derive(files: &[(String, String)]) -> OsInfo {
    let mut map: Vec<(String, Entry)> = Vec::new();
    for (file, text) in files {
        for line in text.lines() {
            // systeminformation: `line.split('=')`, key = part 0, value = part 1 (so a value
            // is cut at a second `=`), both trimmed, key upper-cased.
            let mut parts = line.split('=');
            let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
                continue;
            };
            let key = k.trim().to_uppercase();
            let entry = Entry {
                value: v.trim().to_string(),
                file: file.clone(),
            };
            match map.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = entry,
                None => map.push((key, entry)),
            }
        }
    }
    // JavaScript `||`: an empty string is "absent", but `""` (two quote characters) is not.
    let get = |k: &str| {
        map.iter()
            .find(|(key, e)| key == k && !e.value.is_empty())
            .map(|(_, e)| e)
    };
    let unquote = |s: &str| s.replace('"', "");
    let from = |k: &str, e: &Entry| format!("{k} in {}", e.file);

    if files.is_empty() {
        let rule = "no os-release, lsb-release or other *-release file below the etc root";
        return OsInfo {
            distro: UNKNOWN.into(),
            codename: UNKNOWN.into(),
            release: UNKNOWN.into(),
            distro_rule: rule.into(),
            codename_rule: rule.into(),
            release_rule: rule.into(),
        };
    }

    let (distro, distro_rule) = match get("DISTRIB_ID")
        .map(|e| ("DISTRIB_ID", e))
        .or_else(|| get("NAME").map(|e| ("NAME", e)))
    {
        Some((k, e)) => (unquote(&e.value), from(k, e)),
        None => (
            UNKNOWN.to_string(),
            "neither DISTRIB_ID nor NAME is set".to_string(),
        ),
    };

    let mut release_version = get("VERSION")
        .map(|e| unquote(&e.value))
        .unwrap_or_default();
    let mut release_from = get("VERSION").map(|e| from("VERSION", e));
    let (mut codename, mut codename_rule) = match get("DISTRIB_CODENAME")
        .map(|e| ("DISTRIB_CODENAME", e))
        .or_else(|| get("VERSION_CODENAME").map(|e| ("VERSION_CODENAME", e)))
    {
        Some((k, e)) => (unquote(&e.value), from(k, e)),
        None => (
            String::new(),
            "no DISTRIB_CODENAME or VERSION_CODENAME, none in the version either".into(),
        ),
    };
    if let Some(pretty) = get("PRETTY_NAME") {
        let pretty_value = unquote(&pretty.value);
        let prefix = format!("{distro} ");
        if let Some(rest) = pretty_value.strip_prefix(&prefix) {
            release_version = rest.trim().to_string();
            release_from = Some(format!(
                "{} minus the distro name",
                from("PRETTY_NAME", pretty)
            ));
        }
    }
    if let Some((before, after)) = release_version.split_once('(') {
        // JS `split('(')[1]`: the text up to a second `(`, with parentheses removed.
        let inner = after.split('(').next().unwrap_or("");
        codename = inner.replace(['(', ')'], "").trim().to_string();
        codename_rule = format!(
            "parenthesised part of {}",
            release_from.clone().unwrap_or_default()
        );
        release_version = before.trim().to_string();
        release_from = release_from.map(|r| format!("{r}, cut before \"(\""));
    }
    let (release, release_rule) = if !release_version.is_empty() {
        (release_version, release_from.unwrap_or_default())
    } else if let Some(e) = get("DISTRIB_RELEASE") {
        (unquote(&e.value), from("DISTRIB_RELEASE", e))
    } else if let Some(e) = get("VERSION_ID") {
        (unquote(&e.value), from("VERSION_ID", e))
    } else {
        (
            UNKNOWN.to_string(),
            "no VERSION, PRETTY_NAME, DISTRIB_RELEASE or VERSION_ID".to_string(),
        )
    };

    OsInfo {
        distro,
        codename,
        release,
        distro_rule,
        codename_rule,
        release_rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, text: &str) -> (String, String) {
        (name.to_string(), text.to_string())
    }

    const UBUNTU_LSB: &str = "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.4 LTS\"\n";
    const UBUNTU_OS: &str = "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=jammy\n";

    #[test]
    fn ubuntu_matches_the_seed_example() {
        let info = derive(&[
            f("/etc/lsb-release", UBUNTU_LSB),
            f("/etc/os-release", UBUNTU_OS),
            f("/usr/lib/os-release", UBUNTU_OS),
        ]);
        assert_eq!(info.distro, "Ubuntu");
        assert_eq!(info.release, "22.04.4 LTS");
        assert_eq!(info.codename, "jammy");
        assert_eq!(info.distro_rule, "DISTRIB_ID in /etc/lsb-release");
    }

    #[test]
    fn ubuntu_without_lsb_release_still_matches() {
        let info = derive(&[f("/etc/os-release", UBUNTU_OS)]);
        assert_eq!(
            (
                info.distro.as_str(),
                info.release.as_str(),
                info.codename.as_str()
            ),
            ("Ubuntu", "22.04.4 LTS", "jammy")
        );
    }

    #[test]
    fn debian_takes_codename_from_the_parentheses() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let info = derive(&[f("/etc/os-release", os)]);
        assert_eq!(
            (
                info.distro.as_str(),
                info.release.as_str(),
                info.codename.as_str()
            ),
            ("Debian GNU/Linux", "12", "bookworm")
        );
    }

    #[test]
    fn alpine_takes_release_from_pretty_name() {
        // PRETTY_NAME "Alpine Linux v3.20" minus "Alpine Linux " wins over VERSION_ID, as in
        // systeminformation.
        let os = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n";
        let info = derive(&[f("/etc/os-release", os)]);
        assert_eq!(
            (
                info.distro.as_str(),
                info.release.as_str(),
                info.codename.as_str()
            ),
            ("Alpine Linux", "v3.20", "")
        );
    }

    #[test]
    fn nothing_at_all_is_unknown() {
        let info = derive(&[]);
        assert_eq!(
            (
                info.distro.as_str(),
                info.release.as_str(),
                info.codename.as_str()
            ),
            ("unknown", "unknown", "unknown")
        );
    }

    #[test]
    fn later_files_overwrite_earlier_ones() {
        let info = derive(&[
            f("/etc/a-release", "NAME=Old\nVERSION_ID=1\n"),
            f("/usr/lib/os-release", "NAME=New\nVERSION_ID=2\n"),
        ]);
        assert_eq!((info.distro.as_str(), info.release.as_str()), ("New", "2"));
    }
}
