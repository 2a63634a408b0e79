//! The command search path of everything hasync runs. cron starts a job with
//! `PATH=/usr/bin:/bin` (Wazo's cron files set no PATH), where `runuser`,
//! `xivo-update-config`, `service` or `update-rc.d` (all in the sbin directories) are not
//! found. Wazo's scripts set their own PATH; hasync, at start, appends to the PATH it
//! inherited every directory of [`STANDARD`] that is missing, keeping the inherited order
//! (a test's or an admin's directory first still wins), so every command works from a
//! bare cron, a systemd unit or an `env -i` shell alike.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Debian's root PATH (`/etc/login.defs` ENV_SUPATH).
pub const STANDARD: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// `inherited` with the missing [`STANDARD`] directories appended, in their order.
/// Empty entries of `inherited` (which mean "the current directory") are dropped.
pub fn completed(inherited: Option<&OsStr>) -> OsString {
    let mut dirs: Vec<&[u8]> = inherited
        .map(|p| {
            p.as_bytes()
                .split(|&b| b == b':')
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for d in STANDARD {
        if !dirs.contains(&d.as_bytes()) {
            dirs.push(d.as_bytes());
        }
    }
    OsStr::from_bytes(&dirs.join(&b':')).to_os_string()
}

/// Sets this process's PATH to [`completed`] of its own. Call once, first thing in
/// `main`, before any thread exists.
#[allow(unsafe_code)]
pub fn complete_process_path() {
    let new = completed(std::env::var_os("PATH").as_deref());
    if std::env::var_os("PATH").as_deref() != Some(new.as_os_str()) {
        // SAFETY: called at the top of `main`, before hasync starts any thread, so no
        // other thread can read or write the environment concurrently.
        unsafe { std::env::set_var("PATH", new) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: Option<&str>) -> String {
        completed(p.map(OsStr::new)).into_string().unwrap()
    }

    #[test]
    fn cron_path_gets_the_sbin_directories_after_its_own() {
        assert_eq!(
            c(Some("/usr/bin:/bin")),
            "/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin"
        );
    }

    #[test]
    fn a_complete_path_is_unchanged_and_order_is_kept() {
        let full = STANDARD.join(":");
        assert_eq!(c(Some(&full)), full);
        assert_eq!(
            c(Some("/opt/fakes:/bin:/usr/sbin")),
            "/opt/fakes:/bin:/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/bin:/sbin"
        );
    }

    #[test]
    fn no_path_or_empty_entries_give_the_standard_one() {
        assert_eq!(c(None), STANDARD.join(":"));
        assert_eq!(c(Some("")), STANDARD.join(":"));
        assert_eq!(
            c(Some("::/bin:")),
            format!("/bin:{}", STANDARD[..5].join(":"))
        );
    }
}
