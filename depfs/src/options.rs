//! Mount options (`-o a,b,c`), as mount(8) and fstab pass them.

use anyhow::{bail, Result};

/// The options depfs acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    /// Kernel flags passed through unchanged (`nosuid`, `noexec`, ...).
    pub kernel_flags: Vec<String>,
    pub fsname: Option<String>,
}

/// Options that only mean something to mount(8), fstab or systemd: accepted and ignored.
fn is_mount_level(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "_netdev"
            | "nofail"
            | "rw"
            | "default_permissions"
            | "atime"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "nodiratime"
            | "lazytime"
            | "async"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("subtype=")
}

impl MountOptions {
    /// Parses the `-o` arguments (each a comma-separated list). Unknown options are an
    /// error: silently ignoring a misspelt `ro` would mount a worker writable.
    pub fn parse<'a>(lists: impl IntoIterator<Item = &'a str>) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for list in lists {
            for opt in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match opt {
                    "ro" => o.read_only = true,
                    "allow_other" => o.allow_other = true,
                    "allow_root" => o.allow_root = true,
                    "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "sync"
                    | "dirsync" => o.kernel_flags.push(opt.to_string()),
                    _ if opt.starts_with("fsname=") => {
                        o.fsname = Some(opt["fsname=".len()..].to_string())
                    }
                    _ if is_mount_level(opt) => {}
                    _ => bail!("unknown mount option {opt:?}"),
                }
            }
        }
        if o.allow_other && o.allow_root {
            bail!("mount options allow_other and allow_root exclude each other");
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_are_understood() {
        let o =
            MountOptions::parse(["_netdev,allow_other", "ro,noexec,x-systemd.automount"]).unwrap();
        assert!(o.allow_other && o.read_only);
        assert_eq!(o.kernel_flags, vec!["noexec"]);
    }

    #[test]
    fn unknown_options_are_refused() {
        let err = MountOptions::parse(["rw,r0"]).unwrap_err().to_string();
        assert_eq!(err, "unknown mount option \"r0\"");
        assert!(MountOptions::parse(["allow_other,allow_root"]).is_err());
    }
}
